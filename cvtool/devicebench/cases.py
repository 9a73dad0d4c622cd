"""The shapes benchmark-device measures, their FLOP counts, and the `--sizes` grammar.

No torch here: parsing options and counting FLOPs must work before torch is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cvtool.core.status import UsageError

OPS = ("matmul", "conv2d")
DTYPES = ("float32", "tf32", "bfloat16", "float16")


@dataclass(frozen=True)
class MatmulShape:
    """C[M, N] = A[M, K] @ B[K, N]."""

    m: int
    n: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def describe(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"


@dataclass(frozen=True)
class ConvShape:
    """NCHW input, `cout` filters of kernel x kernel over cin/groups channels, 'same' padding."""

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kernel: int
    stride: int = 1
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def out_hw(self) -> tuple[int, int]:
        def out(size: int) -> int:
            return (size + 2 * self.padding - self.kernel) // self.stride + 1
        return out(self.h), out(self.w)

    @property
    def flops(self) -> int:
        hout, wout = self.out_hw
        return (2 * self.n * self.cout * hout * wout
                * (self.cin // self.groups) * self.kernel * self.kernel)

    def describe(self) -> str:
        group = f" g{self.groups}" if self.groups > 1 else ""
        return (f"{self.n}x{self.cin}x{self.h}x{self.w} -> {self.cout} "
                f"{self.kernel}x{self.kernel}/s{self.stride}{group}")


Shape = MatmulShape | ConvShape


@dataclass(frozen=True)
class Case:
    name: str
    shape: Shape

    @property
    def op(self) -> str:
        return "matmul" if isinstance(self.shape, MatmulShape) else "conv2d"

    def shape_dict(self) -> dict[str, int]:
        return asdict(self.shape)


# Linear layers at batch 32: ResNet-50's classifier and ViT-B/16's attention and MLP
# projections (197 tokens per image), the GEMMs a vision model runs besides convolutions.
MATMUL_LAYERS = {
    "resnet50.fc": MatmulShape(32, 1000, 2048),
    "vit_b16.qkv": MatmulShape(32 * 197, 2304, 768),
    "vit_b16.mlp_up": MatmulShape(32 * 197, 3072, 768),
    "vit_b16.mlp_down": MatmulShape(32 * 197, 768, 3072),
}
MATMUL_SQUARE = (1024, 2048, 4096)
MATMUL_TINY = (64, 128)

# (cin, h, w, cout, kernel, stride, groups) at 224x224 input; torchvision's ResNet-50 puts
# the stride-2 on the 3x3 conv of each stage's first bottleneck (ResNet v1.5).
CONV_LAYERS: dict[str, dict[str, tuple[int, ...]]] = {
    "resnet50": {
        "r50.layer1.1x1_reduce": (256, 56, 56, 64, 1, 1, 1),
        "r50.layer1.3x3": (64, 56, 56, 64, 3, 1, 1),
        "r50.layer2.3x3_s2": (128, 56, 56, 128, 3, 2, 1),
        "r50.layer2.1x1_expand": (128, 28, 28, 512, 1, 1, 1),
        "r50.layer3.3x3": (256, 14, 14, 256, 3, 1, 1),
        "r50.layer4.3x3": (512, 7, 7, 512, 3, 1, 1),
        "r50.layer4.1x1_reduce": (2048, 7, 7, 512, 1, 1, 1),
    },
    "mobilenet_v2": {
        "mbv2.dw3x3_144": (144, 56, 56, 144, 3, 1, 144),
        "mbv2.dw3x3_s2_144": (144, 56, 56, 144, 3, 2, 144),
        "mbv2.pw_144_24": (144, 56, 56, 24, 1, 1, 1),
        "mbv2.dw3x3_960": (960, 7, 7, 960, 3, 1, 960),
        "mbv2.pw_320_1280": (320, 7, 7, 1280, 1, 1, 1),
    },
    "tiny": {
        "tiny.3x3": (16, 16, 16, 16, 3, 1, 1),
        "tiny.1x1": (32, 16, 16, 16, 1, 1, 1),
        "tiny.3x3_s2": (16, 16, 16, 16, 3, 2, 1),
        "tiny.dw3x3": (16, 16, 16, 16, 3, 1, 16),
    },
}
CONV_NAMES = {name: dims for group in CONV_LAYERS.values() for name, dims in group.items()}

DEFAULT_SIZES = {"matmul": ("square", "layers"), "conv2d": ("resnet50", "mobilenet_v2")}
QUICK_SIZES = {"matmul": ("tiny",), "conv2d": ("tiny",)}
MATMUL_WORDS = ("square", "layers", "tiny", "N", "MxNxK")


def parse_sizes(specs: list[str]) -> dict[str, tuple[str, ...]]:
    """`--sizes matmul=1024,layers --sizes conv2d=resnet50`: tokens per op, checked later."""
    sizes: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        op, sep, tokens = spec.partition("=")
        if not sep or op.strip() not in OPS or not tokens.strip():
            raise UsageError(f"--sizes {spec!r}: expected OP=TOKEN[,TOKEN...] with OP one of "
                             f"{', '.join(OPS)}")
        sizes[op.strip()] = tuple(t.strip() for t in tokens.split(",") if t.strip())
    return sizes


def matmul_cases(tokens: tuple[str, ...]) -> list[Case]:
    cases: list[Case] = []
    for token in tokens:
        if token in ("square", "tiny"):
            sides = MATMUL_SQUARE if token == "square" else MATMUL_TINY
            cases += [Case(f"square_{s}", MatmulShape(s, s, s)) for s in sides]
        elif token == "layers":
            cases += [Case(name, shape) for name, shape in MATMUL_LAYERS.items()]
        else:
            cases.append(_matmul_token(token))
    return cases


def _matmul_token(token: str) -> Case:
    parts = token.lower().split("x")
    if len(parts) not in (1, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"matmul size {token!r}: valid sizes are {', '.join(MATMUL_WORDS)} "
                         "(positive integers, e.g. 4096 or 6304x2304x768)")
    m, n, k = (int(parts[0]),) * 3 if len(parts) == 1 else map(int, parts)
    return Case(f"square_{m}" if len(parts) == 1 else f"mm_{token}", MatmulShape(m, n, k))


def conv_cases(tokens: tuple[str, ...], batch_sizes: tuple[int, ...]) -> list[Case]:
    named: list[tuple[str, tuple[int, ...]]] = []
    for token in tokens:
        if token in CONV_LAYERS:
            named += CONV_LAYERS[token].items()
        elif token in CONV_NAMES:
            named.append((token, CONV_NAMES[token]))
        else:
            valid = ", ".join([*CONV_LAYERS, *CONV_NAMES])
            raise UsageError(f"conv2d size {token!r}: valid sizes are {valid}")
    return [Case(f"{name}.b{batch}", ConvShape(batch, *dims))
            for batch in batch_sizes for name, dims in named]


def build_cases(ops: tuple[str, ...], sizes: dict[str, tuple[str, ...]],
                batch_sizes: tuple[int, ...]) -> list[Case]:
    cases: list[Case] = []
    if "matmul" in ops:
        cases += matmul_cases(sizes["matmul"])
    if "conv2d" in ops:
        cases += conv_cases(sizes["conv2d"], batch_sizes)
    return cases

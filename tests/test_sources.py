"""iter_sources: files, directories, globs and stdin become an ordered stream of Source records."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cvtool.core.results import InputError
from cvtool.io.sources import IMAGE_EXTENSIONS, Source, iter_sources

TREE = [
    "b.jpg", "a.PNG", "z.JPG", "notes.txt", ".hidden.png", ".cache/e.png",
    "sub/c.jpeg", "sub/deeper/d.webp", "sub/readme.md", "sub/f.TiFf",
]
# What a walk of the tree yields: images only, no hidden entries, each folder sorted by name.
WALKED = ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp", "sub/f.TiFf", "z.JPG"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in TREE:
        path = tmp_path / "top" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded here")
    return tmp_path / "top"


def paths(sources: Iterable[Source]) -> list[str]:
    return [source.path for source in sources]


def test_image_extensions_are_lower_case_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".tiff", ".webp", ".pnm"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_directory_is_walked_recursively_sorted_images_only(tree: Path) -> None:
    found = list(iter_sources([str(tree)]))
    assert found == [Source(os.path.join(str(tree), name)) for name in WALKED]


def test_found_paths_join_the_directory_as_given(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    assert paths(iter_sources(["top/"]))[:2] == ["top/a.PNG", "top/b.jpg"]
    assert paths(iter_sources(["./top/sub"]))[0] == "./top/sub/c.jpeg"


def test_named_files_pass_whatever_their_extension(tree: Path) -> None:
    named = [str(tree / "notes.txt"), str(tree / ".hidden.png"), str(tree / "b.jpg")]
    assert list(iter_sources(named)) == [Source(path) for path in named]


def test_specs_keep_their_order_and_repeats(tree: Path) -> None:
    specs = [str(tree / "z.JPG"), str(tree / "sub"), str(tree / "z.JPG")]
    below_sub = [str(tree / name) for name in WALKED if name.startswith("sub/")]
    expected = [specs[0], *below_sub, specs[0]]
    assert paths(iter_sources(specs)) == expected


def test_missing_path_is_an_error_source_and_the_stream_goes_on(tree: Path) -> None:
    missing = str(tree / "nope.jpg")
    first, second = iter_sources([missing, str(tree / "b.jpg")])
    assert first.path == missing and first.error is not None
    assert first.error.type == "FileNotFoundError"
    assert second == Source(str(tree / "b.jpg"))


def test_glob_star_matches_one_level_sorted(tree: Path) -> None:
    assert paths(iter_sources([str(tree / "*.jpg")])) == [str(tree / "b.jpg")]
    found = paths(iter_sources([str(tree / "?.[JP]*")]))
    assert found == [str(tree / "a.PNG"), str(tree / "z.JPG")]


def test_glob_double_star_recurses(tree: Path) -> None:
    found = paths(iter_sources([str(tree / "**" / "*.jp*g")]))
    assert found == [str(tree / "b.jpg"), str(tree / "sub" / "c.jpeg")]


def test_glob_matching_folders_walks_them_once(tree: Path) -> None:
    found = paths(iter_sources([str(tree / "**")]))
    assert len(found) == len(set(found))
    assert {str(tree / name) for name in WALKED} <= set(found)
    assert str(tree / ".cache" / "e.png") not in found


def test_glob_without_match_is_an_error_source(tree: Path) -> None:
    pattern = str(tree / "*.bmp")
    (source,) = iter_sources([pattern])
    assert source.path == pattern
    assert source.error is not None and source.error.type == "FileNotFoundError"


def test_existing_path_wins_over_glob_reading(tmp_path: Path) -> None:
    (tmp_path / "[1].png").write_bytes(b"x")
    (tmp_path / "1.png").write_bytes(b"x")
    assert paths(iter_sources([str(tmp_path / "[1].png")])) == [str(tmp_path / "[1].png")]


def test_awkward_names_survive_directory_walk(awkward_dir: Path) -> None:
    found = {os.path.basename(path) for path in paths(iter_sources([str(awkward_dir)]))}
    assert {"with space.png", "café ñ 猫.png", "new\nline.png", "UPPER CASE.PNG"} <= found
    assert "float.tif" in found and "animated.gif" in found


def test_stdin_lines_are_expanded_like_arguments(tree: Path) -> None:
    entries = [tree / "b.jpg", "", f"{tree / 'sub' / 'deeper'}\r", tree / "*.JPG", "   ",
               tree / "gone.png"]
    lines = "\n".join(map(str, entries))  # CRLF, blank and spaces-only lines, no final newline
    found = list(iter_sources(["-"], stdin=io.BytesIO(lines.encode())))
    assert paths(found) == [str(tree / "b.jpg"), str(tree / "sub" / "deeper" / "d.webp"),
                            str(tree / "z.JPG"), str(tree / "gone.png")]
    assert found[-1].error is not None and found[-1].error.type == "FileNotFoundError"


def test_stdin_nul_separated_keeps_newlines_in_names(awkward_dir: Path) -> None:
    names = ["new\nline.png", "café ñ 猫.png", "with space.png"]
    data = b"".join(os.fsencode(awkward_dir / name) + b"\0" for name in names)
    found = list(iter_sources(["-"], stdin=io.BytesIO(data + b"\0"), null=True))
    assert found == [Source(str(awkward_dir / name)) for name in names]


def test_stdin_undecodable_bytes_round_trip_through_fsdecode(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/latin1-\xe9.png"
    with open(raw, "wb") as file:
        file.write(b"x")
    (source,) = iter_sources(["-"], stdin=io.BytesIO(raw + b"\n"))
    assert source.error is None and os.fsencode(source.path) == raw


def test_dash_twice_reads_stdin_once(tree: Path) -> None:
    stdin = io.BytesIO(f"{tree / 'b.jpg'}\n".encode())
    assert paths(iter_sources(["-", str(tree / "z.JPG"), "-"], stdin=stdin)) == [
        str(tree / "b.jpg"), str(tree / "z.JPG")]


def test_dash_defaults_to_process_stdin(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(f"{tree / 'a.PNG'}\n".encode()))
    monkeypatch.setattr(sys, "stdin", fake)
    assert paths(iter_sources(["-"])) == [str(tree / "a.PNG")]


def test_stdin_streams_before_the_writer_finishes(tree: Path) -> None:
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as reader, open(write_end, "wb", buffering=0) as writer:
        sources = iter_sources(["-"], stdin=reader)
        writer.write(f"{tree / 'b.jpg'}\n{tree / 'z.J'}".encode())  # second line not finished
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(next, sources).result(timeout=5)
            assert first == Source(str(tree / "b.jpg"))
            writer.write(b"PG\n")
            assert pool.submit(next, sources).result(timeout=5) == Source(str(tree / "z.JPG"))


def test_nothing_is_read_until_iterated() -> None:
    class Counting(io.BytesIO):
        reads = 0

        def read1(self, size: int = -1) -> bytes:
            self.reads += 1
            return super().read1(size)

    stdin = Counting(b"a.png\n")
    sources = iter_sources(["-"], stdin=stdin)
    assert stdin.reads == 0  # building the stream reads nothing
    assert next(sources).path == "a.png" and stdin.reads >= 1


def test_symlink_loop_is_walked_once(tree: Path) -> None:
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    found = paths(iter_sources([str(tree)]))
    assert found == [str(tree / name) for name in WALKED]


def test_dangling_link_with_image_name_is_left_for_decode(tree: Path) -> None:
    (tree / "sub" / "broken.png").symlink_to(tree / "missing.png")
    assert str(tree / "sub" / "broken.png") in paths(iter_sources([str(tree)]))


def test_unreadable_directory_is_an_error_source(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: chmod 0 does not stop root, and tests may run as root in containers.
    locked = str(tree / "sub" / "deeper")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = list(iter_sources([str(tree)]))
    errors = [(s.path, s.error) for s in found if s.error is not None]
    assert errors == [(locked, InputError("PermissionError", "permission denied"))]
    assert str(tree / "z.JPG") in paths(found)

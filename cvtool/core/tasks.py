"""The one table of task names: what `cvtool models TASK`, checkpoints' `task` field, records'
`task` field and the trainers all spell the same way."""

TASKS = ("classify", "detect", "segment-semantic", "segment-instance", "generate")

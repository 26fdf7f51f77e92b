"""The synthetic suite's tasks: one registered `Task` per family of `mgrd.data.synth.FAMILIES`.

Each task takes its family's name and grader; the suite's items put their clips before the question
(`audio_first`). Wording, chains and answers stay with the families; this module only registers them.
"""

from __future__ import annotations

from mgrd.data.synth import FAMILIES
from mgrd.tasks.base import Task, register_task

SYNTHETIC_TASKS: dict[str, Task] = {
    name: register_task(Task(name=name, grader=family.grader, audio_first=True, description=family.description))
    for name, family in FAMILIES.items()
}

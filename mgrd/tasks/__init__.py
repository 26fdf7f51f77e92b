"""Tasks: how an item becomes a prompt, an SFT target, a grade and a reward (`Task`), the task registry, and
the graders shared by rewards, distillation filters and evaluation (`grading`)."""

from mgrd.tasks.base import (
    TASKS,
    Score,
    Task,
    UnknownTaskError,
    clip_features,
    find_task,
    get_task,
    register_task,
    task_names,
)

__all__ = ["TASKS", "Score", "Task", "UnknownTaskError", "clip_features", "find_task", "get_task", "register_task",
           "task_names"]

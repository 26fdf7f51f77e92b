"""Tasks: answer extraction and graders shared by rewards, distillation filters and evaluation."""

"""Fine-tuning the builtin SQuAD model on this project's packed layouts (needs torch)."""

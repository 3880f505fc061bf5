"""Training recipes (`train-tokenizer`, `train`) and what they share."""

"""Tasks for the masked transformer (generation, frame prediction, in/outpainting, ...)."""

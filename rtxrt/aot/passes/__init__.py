"""AOT optimization passes: one module per pass, each a function ``(model, options) -> PassResult``."""

"""Each method's defining math on tiny tensors, and every method through the real apps."""

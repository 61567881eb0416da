"""NARM in Keras: the GRU, attention and decoder layers, the model, its losses and metrics."""

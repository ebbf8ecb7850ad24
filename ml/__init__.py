"""Features shared by training and serving; train, evaluate, registry."""

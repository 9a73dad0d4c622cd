"""`cvtool train`: the data layer, the classical learners (k-NN) and the neural training loop."""

"""Reference multimodal SNN: spiking image-text retrieval on MNIST digits and template captions."""

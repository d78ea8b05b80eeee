"""ASH-style hybrid image-text retrieval: an ANN visual front end on the host, spiking encoders on chip."""

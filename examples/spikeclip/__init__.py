"""SpikeCLIP-style zero-shot classification: a Spikformer image encoder and a spiking MLP text encoder."""

"""The Lava backend: Loihi2SimCfg(fixed_pt) processes, spikedeploy's programmable neuron and the
import-time fixes lava-nc 0.10 needs on Python 3.11 and numpy 2."""

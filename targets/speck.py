"""A Speck / DYNAP-CNN-class chip (SynSense): 9 convolutional layer-cores, integrate-and-fire neurons only.

From sinabs (`chips/dynapcnn.py`, `discretize.py`, `mapping.py`, read for hardware-and-anchors.md): nine
cores, each holding one convolutional layer; per-core neuron memory 64,64,64,32,32,16,16,16,16 Ki and
kernel memory 16,16,16,32,32,64,64,16,16 Ki entries; 8-bit weights, 16-bit state; IAF neurons only; no
loops between layers. The cores differ; this model gives every core the largest neuron memory (64 Ki)
and the largest kernel memory (64 Ki entries of 8 bits), so it is optimistic: a layer that fits here may
still find no core of its own on the chip, and the partitioner may split a layer over cores, which
DYNAP-CNN cannot. The chip is asynchronous (no time steps); its static power is the measured idle logic +
RAM power of the Speck2f devkit; per-event energies reuse Loihi 1's as estimates.
"""

from .loihi1 import SPEC as LOIHI1
from .spec import HOST_45NM, Capabilities, CoreLimits, NumericFormat, TargetSpec, Value, borrowed

SB = "sinabs chips/dynapcnn.py, discretize.py (via hardware-and-anchors.md)"

SPEC = TargetSpec(
    name="speck",
    description="SynSense Speck / DYNAP-CNN class: 9 conv layer-cores, IAF neurons, 8-bit weights, 16-bit state",
    numeric=NumericFormat(
        weight_bits=8,  # sinabs discretize: 8-bit weights
        mixed_sign_drops_lsb=False,
        state_bits=16,  # sinabs discretize: 16-bit state
        vth_bits=15,
        bias_mant_bits=16,
        act_shift=0,
        max_delay=0,
    ),
    core=CoreLimits(
        neurons=64 * 1024,
        synapse_memory_bits=64 * 1024 * 8,
        input_axons=1 << 20,
        output_axons=1 << 20,
        sources={
            "neurons": SB + ": neuron memory 64,64,64,32,32,16,16,16,16 Ki per core; the largest used (optimistic)",
            "synapse_memory_bits": SB + ": kernel memory up to 64 Ki entries per core, 8-bit weights (optimistic)",
            "input_axons": "no axon limit: layers exchange AER events (estimate)",
            "output_axons": "no axon limit; at most 2 destination layers per layer (sinabs) is not modelled",
            "conv_weight_sharing": SB + ": a core stores one kernel per layer",
        },
        estimate=True,
    ),
    cores_per_chip=9,
    max_chips=1,
    energy={
        **borrowed(LOIHI1.energy, "estimate: Speck publishes no per-event table; Loihi 1 figure"),
        "static_power_chip": Value(419e-6, "W", "sinabs power_monitoring notebook: Speck2f devkit idle logic 367 + "
                                   "RAM 52 uW (pixel array and IO excluded)"),
    },
    timing={
        **borrowed(LOIHI1.timing, "estimate: Speck publishes no per-event timing; Loihi 1 figure"),
        "barrier": Value(3.36e-6 / 9, "s", "derived from open-neuromorphic.org: 3.36 us per event through 9 "
                         "layers, per layer", estimate=True),
    },
    host=dict(HOST_45NM),
    simulators=("emulator",),
    capabilities=Capabilities(
        neuron_ops=("IF",),
        synapse_ops=("Conv2d", "SumPool2d", "AvgPool2d"),
        recurrent=False,
        graded_spikes=False,
        sources={
            "neuron_ops": "sinabs: IAF only (Specksim: 'LIF neurons are not supported')",
            "synapse_ops": SB + ": convolutional layer-cores (conv only)",
            "recurrent": "sinabs exceptions.py: InvalidLayerLoop",
            "graded_spikes": SB + ": AER spike events",
        },
    ),
)

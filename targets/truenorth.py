"""IBM TrueNorth (28 nm, 2014): 4096 cores of 256 binary-spiking neurons behind a 256 x 256 crossbar.

Core counts and the crossbar are Merolla et al., Science 345(6197), 2014 ([M14]); the per-synapse energy
(26 pJ) and the 1 kHz tick are widely cited but were not read in the primary text, so they are marked as
estimates, as is everything about the arithmetic: TrueNorth's neuron (linear leak, per-axon-type weights)
is not the CUBA neuron the emulator computes, so its numeric format here is a ternary-weight,
20-bit-state approximation for feasibility studies, not a bit-exact model.
"""

from .loihi1 import SPEC as LOIHI1
from .spec import HOST_45NM, Capabilities, CoreLimits, NumericFormat, TargetSpec, Value, borrowed

M14 = "Merolla et al., Science 345(6197), 2014 (via ../shared/notes/hardware-and-anchors.md)"
CITED = "widely cited for TrueNorth; primary text not read"

SPEC = TargetSpec(
    name="truenorth",
    description="IBM TrueNorth: 4096 cores x 256 neurons, 256 x 256 binary crossbar, 1 kHz tick (estimate)",
    numeric=NumericFormat(
        weight_bits=2,  # estimate: crossbar bit x axon-type weight, used as ternary {-1, 0, 1} weights
        mixed_sign_drops_lsb=False,
        state_bits=20,  # estimate: membrane potential width commonly given for TrueNorth (unverified)
        vth_bits=12,
        decay_bits=12,
        bias_mant_bits=9,
        act_shift=0,  # a synaptic event adds its weight to v directly
        max_delay=15,  # estimate: 4-bit axonal delay (commonly cited, unverified)
    ),
    core=CoreLimits(
        neurons=256,
        synapse_memory_bits=256 * 256 * 2,
        input_axons=256,
        output_axons=256,
        sources={
            "neurons": M14 + ": 256 neurons per core",
            "synapse_memory_bits": M14 + ": 256 x 256 binary crossbar per core; x2 bits for the ternary weight "
                                         "model (estimate)",
            "input_axons": M14 + ": 256 axons per core",
            "output_axons": M14 + ": each neuron targets one axon (256 per core)",
            "conv_weight_sharing": "crossbar stores every synapse: no kernel sharing",
        },
        estimate=True,
        conv_weight_sharing=False,
    ),
    cores_per_chip=4096,
    max_chips=16,  # estimate: a 16-chip board (NS16e, commonly cited)
    energy={
        **borrowed(LOIHI1.energy, "estimate: no TrueNorth per-event table read; Loihi 1 figure"),
        "synop": Value(26e-12, "J", "26 pJ per synaptic event, " + CITED, estimate=True),
        "static_power_chip": Value(0.063, "W", M14 + " abstract: 63 mW for 400x240 video at 30 fps (total power, "
                                   "used as an upper bound on static power)", estimate=True),
    },
    timing={
        **borrowed(LOIHI1.timing, "estimate: no TrueNorth per-event timing read; Loihi 1 figure"),
        "barrier": Value(1e-3, "s", "1 kHz real-time tick, " + CITED, estimate=True),
    },
    host=dict(HOST_45NM),
    simulators=("emulator",),
    capabilities=Capabilities(
        neuron_ops=("IF",),  # linear leak only: an exponential-decay LIF has no TrueNorth equivalent
        max_fan_in=256,
        graded_spikes=False,
        sources={
            "neuron_ops": "TrueNorth neurons leak linearly; only the leak-free IF maps exactly (estimate)",
            "max_fan_in": M14 + ": 256 axons per core, so at most 256 inputs per neuron",
            "graded_spikes": M14 + ": binary spikes",
        },
    ),
)

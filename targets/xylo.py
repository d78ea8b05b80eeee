"""A SynSense Xylo-class chip (Xylo Audio 2, syns61201): one SNN core of 1000 hidden LIF neurons.

Limits and widths come from rockpool's Xylo documentation and mapper (`docs/devices/xylo-overview.ipynb`,
`syns61201/xylo_mapper.py`, read for ../shared/notes/hardware-and-anchors.md): 16 inputs, 1000 hidden and
8 output neurons, fan-out at most 64 per hidden neuron, 8-bit weights, 16-bit state and thresholds,
bit-shift decays. Decays are modelled here as the emulator's 12-bit multiplicative decay (finer than
Xylo's 4-bit bit shift: an approximation). One core, one chip; no per-event energy table is published, so
per-event figures reuse Loihi 1's as estimates, and the static power is XyloIMU's measured idle power.
"""

from .loihi1 import SPEC as LOIHI1
from .spec import HOST_45NM, Capabilities, CoreLimits, NumericFormat, TargetSpec, Value, borrowed

RP = "rockpool docs/devices/xylo-overview.ipynb and syns61201/xylo_mapper.py (via hardware-and-anchors.md)"

SPEC = TargetSpec(
    name="xylo",
    description="SynSense Xylo Audio 2 class: 1 core, 1000 hidden + 8 output LIF neurons, 8-bit weights, 16-bit state",
    numeric=NumericFormat(
        weight_bits=8,  # rockpool: 8-bit weights
        mixed_sign_drops_lsb=False,
        state_bits=16,  # rockpool: 16-bit state
        vth_bits=15,  # rockpool: 16-bit signed threshold
        bias_mant_bits=16,
        act_shift=0,  # a weight adds to the synaptic current directly
        max_delay=0,
    ),
    core=CoreLimits(
        neurons=1008,
        synapse_memory_bits=(16 * 1000 + 1000 * 64 + 1000 * 8) * 8,
        input_axons=1016,
        output_axons=1008,
        sources={
            "neurons": RP + ": 1000 hidden + 8 output neurons",
            "synapse_memory_bits": "derived from " + RP + ": 16x1000 input, 1000x64 fan-out and 1000x8 output "
                                   "weights of 8 bits (estimate)",
            "input_axons": RP + ": 16 inputs plus the 1000 hidden neurons feeding back (estimate)",
            "output_axons": RP + ": one per neuron (estimate)",
            "conv_weight_sharing": "dense weight memories: a convolution is stored unrolled",
        },
        estimate=True,
        conv_weight_sharing=False,
    ),
    cores_per_chip=1,
    max_chips=1,
    energy={
        **borrowed(LOIHI1.energy, "estimate: Xylo publishes no per-event table; Loihi 1 figure"),
        "static_power_chip": Value(188e-6, "W", "rockpool XyloIMU notebook: SNN + IMU-IF idle 188 uW (a sibling "
                                   "chip of Xylo Audio 2)", estimate=True),
    },
    timing={
        **borrowed(LOIHI1.timing, "estimate: Xylo publishes no per-event timing; Loihi 1 figure"),
        "barrier": Value(0.0, "s", "estimate: one core, no inter-core barrier", estimate=True),
    },
    host=dict(HOST_45NM),
    simulators=("emulator",),
    capabilities=Capabilities(
        neuron_ops=("LIF", "CubaLIF", "IF"),
        max_fan_out=64,
        graded_spikes=False,
        sources={
            "neuron_ops": RP + ": current-based LIF neurons (IF: no leak); readouts are spiking neurons",
            "max_fan_out": RP + ": fan-out at most 64 per hidden neuron (Xylo Audio 2)",
            "graded_spikes": RP + ": binary spike events between neurons",
        },
    ),
)

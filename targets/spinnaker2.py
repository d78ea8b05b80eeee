"""SpiNNaker 2 (22FDX, 2021): 152 ARM Cortex-M4F processing elements per chip running neurons in software.

Chip structure is from open-neuromorphic.org's SpiNNaker 2 page ([ON]); the 8-bit MAC array from Höppner
et al. 2021 (via a review page). Neuron models are software, so any model runs (programmable) and the
per-core limits below are what a software neuron kernel typically fits, marked as estimates. No per-event
energy table was read: per-event figures reuse Loihi 1's and are marked as estimates.
"""

from .loihi1 import SPEC as LOIHI1
from .spec import HOST_45NM, CoreLimits, NumericFormat, TargetSpec, Value, borrowed

ON = "open-neuromorphic.org SpiNNaker 2 page (via ../shared/notes/hardware-and-anchors.md)"

SPEC = TargetSpec(
    name="spinnaker2",
    description="SpiNNaker 2: 152 ARM M4F PEs per chip, software neurons, 8-bit MAC array, ~125 KB SRAM per PE",
    numeric=NumericFormat(
        weight_bits=8,  # Höppner et al. 2021 (via review page): 8-bit MAC array
        state_bits=32,  # estimate: 32-bit fixed-point state of a software neuron kernel
        vth_bits=24,
    ),
    core=CoreLimits(
        neurons=256,
        synapse_memory_bits=19 * 1024 * 1024 * 8 // 152,
        input_axons=4096,
        output_axons=4096,
        sources={
            "neurons": "estimate: 256 neurons per PE, sPyNNaker's usual per-core load (software-defined)",
            "synapse_memory_bits": "derived from " + ON + ": 19 MB SRAM / 152 PEs, all of it counted as synapses "
                                   "(optimistic)",
            "input_axons": "estimate: software routing tables, no published per-PE limit",
            "output_axons": "estimate: software routing tables, no published per-PE limit",
        },
        estimate=True,
    ),
    cores_per_chip=152,
    max_chips=48,  # estimate: one 48-chip board
    energy=borrowed(LOIHI1.energy, "estimate: no SpiNNaker 2 per-event table read; Loihi 1 figure"),
    timing={
        **borrowed(LOIHI1.timing, "estimate: no SpiNNaker 2 per-event timing read; Loihi 1 figure"),
        "barrier": Value(1e-3, "s", "estimate: 1 ms real-time time step, the SpiNNaker software default",
                         estimate=True),
    },
    host=dict(HOST_45NM),
    simulators=("emulator",),
    programmable_neurons=True,  # neurons are ARM software
    # default Capabilities: software neurons run any model, any fan-in, and packets can carry payloads
)

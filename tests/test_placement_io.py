"""`report --placement` loads the placement it is given: its neuron groups as written, each core's use and
the limit breaches recomputed from them; a file that does not describe the graph is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from placement_checker import check_placement

from spikedeploy.errors import FileFormatError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.partition.placer import load_placement, partition
from spikedeploy.report.build import build_report
from spikedeploy.targets.spec import get_target

LOIHI1 = get_target("loihi1")


def _net() -> Graph:
    """in(64) -> fc -> h (3000 IF: 3 Loihi 1 cores of 1024) -> out."""
    return Graph.chain(Node("in", "Input", {"shape": [64]}), Node("fc", "Linear", {"weight": np.ones((3000, 64))}),
                       Node("h", "IF", {"r": np.ones(3000), "v_threshold": np.ones(3000)}), Node("out", "Output"),
                       dt=1.0).validate()


def _save(pl, path, **options):
    d = pl.as_dict()
    d["options"] = {"chips": None, "max_cores": None, "allocator": "greedy", **options}
    path.write_text(json.dumps(d))
    return d


def test_a_loaded_placement_keeps_the_files_groups_and_recomputes_each_core(tmp_path):
    g = _net()
    pl = partition(g, LOIHI1)
    assert pl.cores_used == 3 == pl.lower_bound
    d = _save(pl, tmp_path / "p.json")
    # hand-edit: move neurons 0..99 of the first core onto a fourth core (still a valid placement)
    first = d["cores"][0]["groups"][0]
    assert first[0] == "h" and first[1] == 0
    d["cores"].append({**d["cores"][0], "core": 3, "groups": [["h", 0, 100]]})
    d["cores"][0]["groups"] = [["h", 100, first[2]]]
    (tmp_path / "p.json").write_text(json.dumps(d))
    back = load_placement(tmp_path / "p.json", g, "loihi1")
    check_placement(g, back, LOIHI1)
    # re-partitioning would give 3 cores again; the file's 4 are kept, each core's use recomputed
    assert back.cores_used == 4 and back.lower_bound == 3 and not back.violations
    assert [c.neurons for c in back.cores] == [first[2] - 100, *(c.neurons for c in pl.cores[1:]), 100]
    rep = build_report(g, "loihi1", placement=back)
    assert rep["cores_used"] == 4


def test_a_placement_that_breaks_a_limit_is_loaded_with_the_breach(tmp_path):
    g = _net()
    d = _save(partition(g, LOIHI1), tmp_path / "p.json")
    d["cores"] = [{**d["cores"][0], "groups": [["h", 0, 3000]]}]  # all 3000 neurons on one 1024-neuron core
    (tmp_path / "p.json").write_text(json.dumps(d))
    back = load_placement(tmp_path / "p.json", g, "loihi1")
    assert back.cores_used == 1 and any("neurons 3000 exceeds the loihi1 limit 1024" in v for v in back.violations)


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["cores"][1].update(groups=[]), "layer 'h': the neuron groups do not cover neurons 0..3000 exactly once"),
    (lambda d: d["cores"][0].update(groups=[["nope", 0, 5]]), "layer 'nope' is not a chip layer of this graph"),
    (lambda d: d.update(target="loihi2"), "a placement on 'loihi2', not on 'loihi1'"),
    (lambda d: d.pop("cores"), "not a placement file from `spikedeploy partition -o`"),
])
def test_a_placement_file_that_does_not_describe_the_graph_is_refused_in_one_line(tmp_path, edit, needle):
    g = _net()
    d = _save(partition(g, LOIHI1), tmp_path / "p.json")
    edit(d)
    (tmp_path / "p.json").write_text(json.dumps(d))
    with pytest.raises(FileFormatError) as e:
        load_placement(tmp_path / "p.json", g, "loihi1")
    assert needle in str(e.value) and "\n" not in str(e.value)

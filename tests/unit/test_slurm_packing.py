"""The Slurm backend's packing by resources, without a cluster: refusal before anything starts, the
per-node request it submits, placement onto the capacities an allocation reports (fake provider)."""
from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest

from orchestra.errors import ProfileError, ResourceError
from orchestra.resources import Request
from runaway.allocation_backend import Allocation, AllocationBackend
from runaway.placement import NodeCapacity
from runaway.profiles import build_profile
from runaway.slurm_resources import NodeRequest, NodeSize


class Provider:
    places_by_resources = True
    writes_ready_files = False

    def __init__(self, sizes: list[NodeSize]) -> None:
        self.sizes = sizes
        self.sinfo_calls = 0

    def node_sizes(self, host, partition):
        self.sinfo_calls += 1
        return self.sizes


def backend(sizes: list[NodeSize], **allocation) -> tuple[AllocationBackend, Provider]:
    profile = build_profile("cluster", {"kind": "slurm", "host": "frontend",
                                        "allocation": {"nodes": 2, **allocation}})
    provider = Provider(sizes)
    launcher = SimpleNamespace(starter=SimpleNamespace(whole=False))
    return AllocationBackend(profile, provider, launcher, SimpleNamespace(host=None)), provider


GPU_NODE = NodeSize(4, 2, 4096 * 2**20, ("node1",))


def test_a_request_no_node_holds_is_refused_naming_profile_node_size_and_request():
    b, _ = backend([GPU_NODE])
    with pytest.raises(ProfileError) as caught:
        b.check_requests([Request(gpus=Fraction(1)), Request(gpus=Fraction(3))])
    message = str(caught.value)
    assert message == ("resources {cpus: 1, gpus: 3} fit no node of profile 'cluster' (nodes: 4 cores, 2 GPUs, "
                       "4G memory); ask for less, or a partition with bigger nodes (allocation.partition)")
    assert caught.value.exit_code == 11 and b.packed is None


def test_the_submitted_request_is_derived_and_the_profile_can_say_otherwise():
    b, provider = backend([GPU_NODE])
    b.check_requests([Request(gpus=Fraction(1, 2))])
    b._expected_total = 100
    assert b.node_request() == NodeRequest(cpus=4, gpus=2)
    assert b.launcher.starter.whole  # the node agent step holds every core of its node
    b._expected_total = 2  # two executions on two nodes: one each
    assert b.node_request() == NodeRequest(cpus=1, gpus=1)
    # Declared node size: no sinfo; cpus_per_node caps what the request is derived from.
    b, provider = backend([], cpus_per_node=2, gpus_per_node=2, gpu_option="gpus-per-node")
    b.check_requests([Request(gpus=Fraction(1, 2))])
    assert provider.sinfo_calls == 0
    assert b.node_request() == NodeRequest(cpus=2, gpus=2, gpu_option="gpus-per-node")  # gpus_per_node wins


def test_executions_are_placed_on_running_allocations_only_and_given_back():
    b, _ = backend([GPU_NODE])
    one = Request(gpus=Fraction(1))
    b.check_requests([one])
    assert b.acquire_for([one], wait=False) is None  # no allocation runs yet
    alloc = b.allocations["7"] = Allocation("7", 0.0, state="RUNNING", nodes=("node1",))
    b._add_capacities([NodeCapacity("7/node1", (0, 1), ("0", "1"))])
    first = b.acquire_for([one], wait=False)
    second = b.acquire_for([one], wait=False)
    assert first is not None and second is not None
    assert (first[1].node, first[1].allocation) == ("node1", "7") and first[1] != second[1]
    assert {b.packed.bindings[s[1]].gpus for s in (first, second)} == {("0",), ("1",)}
    assert b.acquire_for([one], wait=False) is None  # both devices are taken
    b.release(first[1])
    assert b.acquire_for([one], wait=False) is not None
    # An allocation too close to its walltime takes no more work: its nodes leave the packer.
    b.release(second[1])
    alloc.expires = 0.0
    assert b.acquire_for([one], wait=False) is None and not b.packed.packer.nodes


def test_profiles_without_resources_keep_exactly_todays_path():
    b, _ = backend([GPU_NODE])
    b.check_requests([])
    assert b.packed is None and b.node_request() is None

"""Packing by resources (runaway/placement.py): what is placed where, and that nothing is ever overcommitted."""
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.resources import Request
from runaway.placement import (Binding, NodeCapacity, Packer, bound_env, impossible, memory_limit_line)

GiB = 2**30


def node(name="n0", cores=8, gpus=4, memory=64 * GiB):
    return NodeCapacity(name, tuple(range(cores)), tuple(str(i) for i in range(gpus)), memory)


def test_whole_gpus_are_distinct_devices_and_cores_distinct():
    packer = Packer([node()])
    first = packer.place(Request(cpus=2, gpus=Fraction(2)))
    second = packer.place(Request(cpus=2, gpus=Fraction(2)))
    assert first is not None and second is not None
    assert set(first.gpus).isdisjoint(second.gpus) and set(first.cores).isdisjoint(second.cores)
    assert packer.place(Request(cpus=1, gpus=Fraction(1))) is None  # all four devices are taken


def test_fractions_share_one_device_up_to_one():
    packer = Packer([node(gpus=2)])
    quarters = [packer.place(Request(gpus=Fraction(1, 4))) for _ in range(4)]
    assert {b.gpus for b in quarters if b} == {("0",)}  # best fit: they pile up on one device
    assert packer.place(Request(gpus=Fraction(1))).gpus == ("1",)
    assert packer.place(Request(gpus=Fraction(1, 4))) is None
    packer.release(quarters[0])
    assert packer.place(Request(gpus=Fraction(1, 4))).gpus == ("0",)


def test_a_whole_gpu_never_goes_to_a_shared_device():
    packer = Packer([node(gpus=1)])
    assert packer.place(Request(gpus=Fraction(1, 2))) is not None
    assert packer.place(Request(gpus=Fraction(1))) is None


def test_memory_is_counted():
    packer = Packer([node(memory=16 * GiB)])
    assert packer.place(Request(memory=10 * GiB)) is not None
    assert packer.place(Request(memory=10 * GiB)) is None
    assert packer.place(Request(memory=6 * GiB)).memory == 6 * GiB


def test_choose_takes_the_widest_that_fits_and_does_not_wait_for_one_that_does_not():
    packer = Packer([node(cores=8, gpus=4)])
    packer.place(Request(gpus=Fraction(1)))  # three devices left: the 4-GPU execution cannot start now
    waiting = [Request(gpus=Fraction(1)), Request(gpus=Fraction(4)), Request(gpus=Fraction(2))]
    index, binding = packer.choose(waiting)
    assert index == 2 and len(binding.gpus) == 2  # the widest that fits, not the widest
    index, binding = packer.choose(waiting)
    assert index == 0  # then the 1-GPU one fills the last device
    assert packer.choose([Request(gpus=Fraction(4))]) is None


def test_ties_go_to_the_one_waiting_longest():
    packer = Packer([node()])
    assert packer.choose([Request(), Request(), Request()])[0] == 0


def test_first_fit_over_nodes_in_order():
    packer = Packer([node("a", gpus=1), node("b", gpus=2)])
    assert packer.place(Request(gpus=Fraction(2))).node == "b"
    assert packer.place(Request(gpus=Fraction(1))).node == "a"


def test_impossible_requests_name_the_profile_the_node_size_and_the_request():
    why = impossible(Request(gpus=Fraction(3)), [node(gpus=2, cores=16, memory=64 * GiB)], "cluster")
    assert why == ("resources {cpus: 1, gpus: 3} fit no node of profile 'cluster' (nodes: 16 cores, 2 GPUs, "
                   "64G memory); ask for less, or give the profile bigger nodes")
    assert impossible(Request(gpus=Fraction(2)), [node(gpus=2)], "cluster") is None
    assert "fit no node" in impossible(Request(memory=128 * GiB), [node()], "p")
    assert "fit no node" in impossible(Request(cpus=9), [node()], "p")


def test_the_environment_names_the_devices_and_sizes_thread_pools():
    binding = Binding("n0", (2, 3), ("1", "3"), Fraction(1))
    env = bound_env(binding, {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0", "X": "y"})
    assert env["CUDA_VISIBLE_DEVICES"] == env["ROCR_VISIBLE_DEVICES"] == env["HIP_VISIBLE_DEVICES"] == "1,3"
    assert env["ORCHESTRA_GPUS"] == "1,3" and env["X"] == "y"
    assert env["OMP_NUM_THREADS"] == "1"  # the user's own value wins for thread counts...
    assert env["MKL_NUM_THREADS"] == "2"  # ...which default to the core count
    no_gpu = bound_env(Binding("n0", (0,)), {})
    assert no_gpu["CUDA_VISIBLE_DEVICES"] == ""  # an execution that asked for none sees none
    share = bound_env(Binding("n0", (0,), ("0",), Fraction(1, 4)), {})
    assert share["ORCHESTRA_GPU_SHARE"] == "0.25"


def test_memory_limit_is_a_shell_builtin_line_in_kib():
    assert memory_limit_line(16 * GiB).startswith("ulimit -v 16777216 ")


requests = st.builds(
    Request,
    cpus=st.integers(1, 6),
    gpus=st.sampled_from([Fraction(0), Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(1), Fraction(2),
                          Fraction(3)]),
    memory=st.one_of(st.none(), st.integers(1, 40).map(lambda g: g * GiB)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(requests, st.booleans()), max_size=60), st.integers(1, 3))
def test_random_requests_and_releases_never_overcommit(steps, nodes):
    capacities = [node(f"n{i}", cores=8, gpus=4, memory=64 * GiB) for i in range(nodes)]
    packer = Packer(capacities)
    running: list[Binding] = []
    for request, release_first in steps:
        if release_first and running:
            packer.release(running.pop(0))
        binding = packer.place(request)
        if binding is not None:
            assert len(binding.cores) == request.cpus
            assert sum(binding.gpu_share for _ in binding.gpus) == request.gpus
            running.append(binding)
        for cap in capacities:
            here = [b for b in running if b.node == cap.name]
            cores = [c for b in here for c in b.cores]
            assert len(cores) == len(set(cores)) and set(cores) <= set(cap.cores)
            for gpu in cap.gpus:
                users = [b for b in here if gpu in b.gpus]
                assert sum(b.gpu_share for b in users) <= 1
                assert len(users) <= 1 or all(b.gpu_share < 1 for b in users)  # a whole device is never shared
            assert sum(b.memory or 0 for b in here) <= cap.memory


@settings(max_examples=100, deadline=None)
@given(st.lists(requests, min_size=1, max_size=20))
def test_choose_places_something_whenever_anything_fits(waiting):
    packer = Packer([node()])
    fits_alone = [i for i, r in enumerate(waiting) if Packer([node()]).place(r) is not None]
    chosen = packer.choose(waiting)
    assert (chosen is None) == (not fits_alone)


def test_a_binding_line_reads_back():
    from runaway.placement import parse_binding, render_binding

    binding = Binding("localhost", (0, 3), ("1",), Fraction(1, 4), 2 * GiB)
    assert parse_binding(render_binding(binding), "localhost") == binding
    bare = Binding("localhost", (2,))
    assert parse_binding(render_binding(bare), "localhost") == bare
    assert parse_binding("garbage", "localhost") is None


def test_a_reattached_execution_keeps_its_devices_and_cores(tmp_path):
    """After a restart, the local backend holds what a still-running execution was bound to."""
    from runaway.backend import RunHandle, Slot
    from runaway.local import LocalBackend
    from runaway.placement import BINDING_FILE, render_binding

    backend = LocalBackend(tmp_path, capacity={"gpus": [0, 1]}, profile="fake")
    backend.check_requests([Request(gpus=Fraction(1))])
    run_dir = tmp_path / "runs" / "0123456789ab"
    (run_dir / ".orchestra").mkdir(parents=True)
    cores = backend.packed.packer.capacities()[0].cores
    (run_dir / ".orchestra" / BINDING_FILE).write_text(render_binding(Binding("localhost", cores[:1], ("0",),
                                                                              Fraction(1))))
    handle = RunHandle("0123456789ab", Slot("localhost", 0), str(run_dir))
    backend._hold_binding(handle)
    assert handle.binding is not None and handle.binding.gpus == ("0",)
    assert backend.acquire_for([Request(gpus=Fraction(2))], wait=False) is None
    index, slot = backend.acquire_for([Request(gpus=Fraction(1))], wait=False)
    assert backend.packed.bindings[slot].gpus == ("1",) and cores[0] not in backend.packed.bindings[slot].cores


def test_backends_that_place_by_slots_refuse_requests_instead_of_ignoring_them():
    import pytest

    from orchestra.errors import ProfileError
    from runaway.slot_requests import SlotsOnly

    class Slots(SlotsOnly):
        name = "slurm"

        def acquire(self):
            raise AssertionError("a slot must not be handed out for a request")

    with pytest.raises(ProfileError, match="'slurm' does not place executions by resources: run"):
        Slots().check_requests([Request()])
    with pytest.raises(ProfileError):
        Slots().acquire_for([Request(gpus=Fraction(1))])

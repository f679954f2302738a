"""gradient_penalty and the whole critic_loss (forward + backward) against the autograd
double-backward reference, eager, and on GPU against the same reference captured in a CUDA graph.
Critic 10-256-256-256-1 (the paper's table 3), batch 64 and 4096.

Stacked critics (op "stacked_critic_loss"): one training step of R = 20 such critics (R runs
trained side by side, batch 64 each) through one fused stacked call, against a loop of 20 fused
single critic_loss calls ("wtc_ext_loop") and the pure-PyTorch autograd reference through the
stacked module (batched products, double backward; on GPU also captured in a CUDA graph)."""

import pytest
import torch

import wtc_ext
from conftest import NEEDS_CUDA
from wtc_ext.nn import MLPCritic, StackedMLPCritic
from wtc_ext.reference import (critic_loss_reference, gradient_penalty_reference,
                               stacked_critic_loss_reference)

BATCHES = [64, 4096]


def setup(device, batch):
    torch.manual_seed(0)
    critic = MLPCritic(10).to(device)
    p = torch.randn(batch, 10, device=device)
    q = torch.randn(batch, 10, device=device) + 1
    return critic, p, q


def step_fn(kind, impl, critic, p, q):
    """One training-step worth of work: the loss and every parameter gradient."""
    if impl == "wtc_ext":
        if kind == "gradient_penalty":
            loss_fn = lambda: wtc_ext.gradient_penalty(critic, p, q)
        else:
            loss_fn = lambda: wtc_ext.critic_loss(critic, p, q, gp_weight=4.0).loss
    else:
        if kind == "gradient_penalty":
            loss_fn = lambda: gradient_penalty_reference(critic, p, q)
        else:
            loss_fn = lambda: critic_loss_reference(critic, p, q, gp_weight=4.0)[0]

    def step():
        for param in critic.parameters():
            param.grad = None
        loss = loss_fn()
        loss.backward()
        return loss

    if impl == "autograd_cuda_graph":
        return cuda_graphed(step, critic)
    return step


def cuda_graphed(step, critic):
    """The reference step captured once in a CUDA graph and replayed (no CPU overhead)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream, as capture requires
            step()
    torch.cuda.current_stream().wait_stream(stream)
    for param in critic.parameters():
        param.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        # The interpolation weights are drawn inside the graph from the graph-safe generator.
        step()
    return graph.replay


# The CUDA-graphed reference exists only on a GPU, so it is only generated there.
CASES = [("cpu", impl) for impl in ("wtc_ext", "autograd_eager")] + [
    pytest.param("cuda", impl, marks=NEEDS_CUDA)
    for impl in ("wtc_ext", "autograd_eager", "autograd_cuda_graph")]


@pytest.mark.parametrize("device,impl", CASES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", ["gradient_penalty", "critic_loss"])
def test_critic(bench, device, kind, batch, impl):
    critic, p, q = setup(device, batch)
    fn = step_fn(kind, impl, critic, p, q)
    bench(kind, device, f"batch {batch}, 10-256-256-256-1", impl, fn)


RUNS = 20


def setup_stacked(device, runs=RUNS, batch=64):
    torch.manual_seed(0)
    critics = [MLPCritic(10).to(device) for _ in range(runs)]
    stacked = StackedMLPCritic.from_critics(critics)
    p = torch.randn(runs, batch, 10, device=device)
    q = torch.randn(runs, batch, 10, device=device) + 1
    return critics, stacked, p, q


def stacked_step_fn(impl, critics, stacked, p, q):
    """One training step of every run's critic: the R losses and every parameter gradient."""
    if impl == "wtc_ext_loop":
        def step():
            for r, critic in enumerate(critics):
                for param in critic.parameters():
                    param.grad = None
                wtc_ext.critic_loss(critic, p[r], q[r], gp_weight=4.0).loss.backward()
        return step
    if impl == "wtc_ext":
        loss_fn = lambda: wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0).loss
    else:
        loss_fn = lambda: stacked_critic_loss_reference(stacked, p, q, gp_weight=4.0)[0]

    def step():
        for param in stacked.parameters():
            param.grad = None
        loss = loss_fn()
        loss.sum().backward()
        return loss

    if impl == "autograd_cuda_graph":
        return cuda_graphed(step, stacked)
    return step


STACKED_CASES = [("cpu", impl) for impl in ("wtc_ext", "wtc_ext_loop", "autograd_eager")] + [
    pytest.param("cuda", impl, marks=NEEDS_CUDA)
    for impl in ("wtc_ext", "wtc_ext_loop", "autograd_eager", "autograd_cuda_graph")]


@pytest.mark.parametrize("device,impl", STACKED_CASES)
def test_stacked_critic(bench, device, impl):
    critics, stacked, p, q = setup_stacked(device)
    fn = stacked_step_fn(impl, critics, stacked, p, q)
    bench("stacked_critic_loss", device, f"{RUNS} runs, batch 64, 10-256-256-256-1", impl, fn)

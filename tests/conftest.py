import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# Every op test runs on each device; CUDA cases skip (saying why) where there is no GPU.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param

"""Loading the lpips package's networks, failing clearly when the backbone cannot be had offline."""

from __future__ import annotations

from flashbench.errors import MissingWeightsError


def load_lpips(net: str, device="cpu"):
    try:
        import lpips

        model = lpips.LPIPS(net=net, verbose=False)
    except Exception as exc:  # torchvision's download fails offline with URLError/OSError/RuntimeError
        raise MissingWeightsError(
            f"LPIPS backbone {net!r} (torchvision ImageNet weights) is not on this machine: put the torchvision "
            f"checkpoint in $TORCH_HOME/hub/checkpoints (e.g. from a machine with internet: python -c "
            f"\"import lpips; lpips.LPIPS(net='{net}')\") ({type(exc).__name__})"
        ) from None
    return model.to(device).eval().requires_grad_(False)

"""r2dn-control: provably stable and robust recurrent networks for control engineering."""

__version__ = "0.1.0"

"""Deployment: ONNX and plain-C exports of a trained model, each with its re-checked certificate.

`to_onnx` and `to_c` write the explicit model in the stacked step form of
`r2dn_control.nn.realtime` (weights folded, docs/theory.md §2, §3) and a JSON sidecar
with the model's guaranteed bounds, the bounds re-certified on the exported weights, the
metric's checksum and the dtype they were verified in (see ``docs/deployment.md``).
"""

from .api import to_c, to_onnx
from .certificate import CertificateError, metric_checksum, recheck

__all__ = ["CertificateError", "metric_checksum", "recheck", "to_c", "to_onnx"]

// Byte snapshots of a list of CPU tensors, for the inference cache of the explicit weights
// (r2dn_control/nn/_inference_cache.py): one call copies or compares the raw bytes of every
// tensor (a parameter or buffer of a model) without one dispatched op per tensor.
//
// Every tensor must be contiguous and on the CPU (the Python side checks this and otherwise
// takes its torch path); dtypes may differ, since only bytes are compared.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace r2dn_kernels {
namespace {

int64_t total_bytes(const std::vector<at::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(),
                "snapshot: every tensor must be a contiguous CPU tensor");
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

// The bytes of every tensor, concatenated in order (a 1-D uint8 tensor).
at::Tensor snapshot_bytes(const std::vector<at::Tensor>& tensors) {
  at::Tensor out = at::empty({total_bytes(tensors)}, at::TensorOptions().dtype(at::kByte));
  auto* dst = static_cast<char*>(out.data_ptr());
  for (const auto& t : tensors) {
    const int64_t n = t.numel() * static_cast<int64_t>(t.element_size());
    if (n > 0) std::memcpy(dst, t.const_data_ptr(), static_cast<size_t>(n));
    dst += n;
  }
  return out;
}

// Whether the concatenated bytes of the tensors equal ``snapshot`` (same length and content).
bool snapshot_equal(const std::vector<at::Tensor>& tensors, const at::Tensor& snapshot) {
  TORCH_CHECK(snapshot.device().is_cpu() && snapshot.is_contiguous() &&
                  snapshot.scalar_type() == at::kByte && snapshot.dim() == 1,
              "snapshot_equal: the snapshot must be a contiguous 1-D uint8 CPU tensor");
  if (total_bytes(tensors) != snapshot.numel()) return false;
  const auto* ref = static_cast<const char*>(snapshot.const_data_ptr());
  for (const auto& t : tensors) {
    const int64_t n = t.numel() * static_cast<int64_t>(t.element_size());
    if (n > 0 && std::memcmp(ref, t.const_data_ptr(), static_cast<size_t>(n)) != 0) return false;
    ref += n;
  }
  return true;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(r2dn_control, m) {
  m.def("snapshot_bytes(Tensor[] tensors) -> Tensor");
  m.def("snapshot_equal(Tensor[] tensors, Tensor snapshot) -> bool");
}

TORCH_LIBRARY_IMPL(r2dn_control, CPU, m) {
  m.impl("snapshot_bytes", &snapshot_bytes);
  m.impl("snapshot_equal", &snapshot_equal);
}

}  // namespace r2dn_kernels

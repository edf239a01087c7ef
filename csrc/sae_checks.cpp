#include "sae_checks.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace sae {
namespace {

using torch::headeronly::ScalarType;

// Shapes and devices as Python prints them ([2, 3], cpu, cuda:0), so that these messages
// match the fakes'.
struct Shape {
  const Tensor& t;
};
std::ostream& operator<<(std::ostream& os, Shape s) {
  os << '[';
  for (int64_t d = 0; d < s.t.dim(); ++d) os << (d ? ", " : "") << s.t.size(d);
  return os << ']';
}

struct Where {
  const Tensor& t;
};
std::ostream& operator<<(std::ostream& os, Where w) {
  const auto dev = w.t.device();
  switch (dev.type()) {
    case DeviceType::CPU: os << "cpu"; break;
    case DeviceType::CUDA: os << "cuda"; break;
    case DeviceType::Meta: os << "meta"; break;
    default: os << "device type " << int(dev.type()); break;
  }
  if (dev.type() != DeviceType::CPU && dev.has_index()) os << ':' << int(dev.index());
  return os;
}

const char* device_name(DeviceType d) {
  return d == DeviceType::CUDA ? "a CUDA device" : d == DeviceType::CPU ? "the CPU" : "its device";
}

bool same_shape(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) != b.size(d)) return false;
  return true;
}

bool is_float_kind(ScalarType s) {
  return s == ScalarType::Float || s == ScalarType::Double || s == ScalarType::Half ||
         s == ScalarType::BFloat16;
}

Kind kind_of(ScalarType s) {
  switch (s) {
    case ScalarType::Float: return Kind::F32;
    case ScalarType::Double: return Kind::F64;
    case ScalarType::Half: return Kind::F16;
    case ScalarType::BFloat16: return Kind::BF16;
    case ScalarType::Bool: case ScalarType::Byte: case ScalarType::Char: return Kind::B8;
    case ScalarType::Short: return Kind::I16;
    case ScalarType::Int: return Kind::I32;
    case ScalarType::Long: return Kind::I64;
    default: fail("sae: unsupported dtype ", s);
  }
}

// The kernel's own device type: the first tensor checked is the reference for the others.
void check_device_type(const char* op, const char* name, const Tensor& t, DeviceType device) {
  SAE_CHECK(t.device().type() == device, op, ": `", name, "` is on ", Where{t},
            ", but this kernel needs tensors on ", device_name(device));
}

void check_float_tensor(const char* op, const char* name, const Tensor& t) {
  SAE_CHECK(is_float_kind(t.scalar_type()), op, ": `", name,
            "` must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
}

void check_mask_dtype(const char* op, const Tensor& t) {
  const auto s = t.scalar_type();
  SAE_CHECK(is_float_kind(s) || s == ScalarType::Bool || s == ScalarType::Byte ||
                s == ScalarType::Char || s == ScalarType::Short || s == ScalarType::Int ||
                s == ScalarType::Long,
            op, ": `mask` must be bool, an integer dtype or float16/bfloat16/float32/float64, got ", s);
}

void check_2d(const char* op, const char* name, const Tensor& t) {
  SAE_CHECK(t.dim() == 2, op, ": `", name, "` must be 2-D [B, T], got ", t.dim(),
            "-D with shape ", Shape{t});
}

void check_same_device(const char* op, const char* name, const Tensor& t, const char* ref_name,
                       const Tensor& ref) {
  SAE_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", Where{t}, " but `", ref_name,
            "` is on ", Where{ref}, "; all tensors must be on one device");
}

void check_like(const char* op, const char* name, const Tensor& t, const char* ref_name,
                const Tensor& ref) {
  check_2d(op, name, t);
  SAE_CHECK(same_shape(t, ref), op, ": `", name, "` must have the shape of `", ref_name, "` ",
            Shape{ref}, ", got ", Shape{t});
  check_same_device(op, name, t, ref_name, ref);
}

void check_unit(const char* op, const char* name, double x) {
  SAE_CHECK(x >= 0.0 && x <= 1.0, op, ": `", name, "` must be in [0, 1], got ", x);
}

Params checked_params(const char* op, double gamma, double lam, double lam_inner, double threshold,
                      bool uses_threshold) {
  check_unit(op, "gamma", gamma);
  check_unit(op, "lam", lam);
  check_unit(op, "lam_inner", lam_inner);
  if (uses_threshold) check_unit(op, "threshold", threshold);
  return sae::make_params(gamma, lam, lam_inner, uses_threshold ? threshold : 1.0);
}

void check_bootstrap(const char* op, const Tensor& bs, const Tensor& ref) {
  SAE_CHECK(bs.dim() == 1 && bs.size(0) == ref.size(0), op,
            ": `bootstrap` must be 1-D with one value per row [", ref.size(0), "], got shape ",
            Shape{bs});
  check_float_tensor(op, "bootstrap", bs);
  check_same_device(op, "bootstrap", bs, "rewards", ref);
}

bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

Tensor new_matrix(const Tensor& like, int64_t B, int64_t T, bool use_double) {
  return torch::stable::new_empty(like, {B, T}, use_double ? ScalarType::Double : ScalarType::Float);
}

}  // namespace

Mat as_mat(const Tensor& t) {
  Mat m;
  m.ptr = t.data_ptr();
  m.kind = kind_of(t.scalar_type());
  m.sb = t.dim() >= 1 ? t.stride(0) : 0;
  m.st = t.dim() >= 2 ? t.stride(1) : 0;
  return m;
}

Prepared prepare_forward(const char* op, DeviceType device, const Tensor& rewards,
                         const Tensor& values, const Tensor& cut, bool cut_is_logprobs,
                         const Tensor& mask, double gamma, double lam, double lam_inner,
                         double threshold, const OptTensor& bootstrap) {
  const char* cut_name = cut_is_logprobs ? "logprobs" : "boundaries";
  check_device_type(op, "rewards", rewards, device);
  check_2d(op, "rewards", rewards);
  check_float_tensor(op, "rewards", rewards);
  check_like(op, "values", values, "rewards", rewards);
  check_float_tensor(op, "values", values);
  check_like(op, cut_name, cut, "rewards", rewards);
  if (cut_is_logprobs) {
    check_float_tensor(op, cut_name, cut);
  } else {
    SAE_CHECK(cut.scalar_type() == ScalarType::Bool, op,
              ": `boundaries` must be a bool tensor, got ", cut.scalar_type());
  }
  check_like(op, "mask", mask, "rewards", rewards);
  check_mask_dtype(op, mask);
  const bool has_bs = given(bootstrap);
  if (has_bs) check_bootstrap(op, *bootstrap, rewards);

  Prepared out;
  out.use_double = rewards.scalar_type() == ScalarType::Double ||
                   values.scalar_type() == ScalarType::Double ||
                   (cut_is_logprobs && cut.scalar_type() == ScalarType::Double) ||
                   (has_bs && bootstrap->scalar_type() == ScalarType::Double);
  const int64_t B = rewards.size(0), T = rewards.size(1);
  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, cut_is_logprobs);
  out.out0 = new_matrix(rewards, B, T, out.use_double);
  out.out1 = new_matrix(rewards, B, T, out.use_double);
  a.a = as_mat(rewards);
  a.b = as_mat(values);
  a.mask = as_mat(mask);
  a.cut = CutSource{as_mat(cut), cut_is_logprobs};
  a.bootstrap = has_bs ? as_mat(*bootstrap) : Mat{nullptr, 0, 0, Kind::F32};
  a.bootstrap.st = 0;
  a.out0 = out.out0.data_ptr();
  a.out1 = out.out1.data_ptr();
  a.out2 = nullptr;
  return out;
}

Prepared prepare_adjoint(const char* op, DeviceType device, const OptTensor& grad_advantages,
                         const OptTensor& grad_returns, const Tensor& mask,
                         const OptTensor& logprobs, const OptTensor& boundaries, double gamma,
                         double lam, double lam_inner, double threshold) {
  check_device_type(op, "mask", mask, device);
  check_2d(op, "mask", mask);
  check_mask_dtype(op, mask);
  const bool has_lp = given(logprobs), has_bd = given(boundaries);
  SAE_CHECK(has_lp != has_bd, op, ": pass exactly one of `logprobs` and `boundaries`");
  const Tensor& cut = has_lp ? *logprobs : *boundaries;
  check_like(op, has_lp ? "logprobs" : "boundaries", cut, "mask", mask);
  if (has_lp) check_float_tensor(op, "logprobs", cut);
  else SAE_CHECK(cut.scalar_type() == ScalarType::Bool, op, ": `boundaries` must be a bool tensor");

  const bool has_ga = given(grad_advantages), has_gr = given(grad_returns);
  bool use_double = false;
  if (has_ga) {
    check_like(op, "grad_advantages", *grad_advantages, "mask", mask);
    check_float_tensor(op, "grad_advantages", *grad_advantages);
    use_double |= grad_advantages->scalar_type() == ScalarType::Double;
  }
  if (has_gr) {
    check_like(op, "grad_returns", *grad_returns, "mask", mask);
    check_float_tensor(op, "grad_returns", *grad_returns);
    use_double |= grad_returns->scalar_type() == ScalarType::Double;
  }

  Prepared out;
  out.use_double = use_double;
  const int64_t B = mask.size(0), T = mask.size(1);
  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, has_lp);
  out.out0 = new_matrix(mask, B, T, use_double);
  out.out1 = new_matrix(mask, B, T, use_double);
  out.out2 = torch::stable::new_empty(mask, {B}, use_double ? ScalarType::Double : ScalarType::Float);
  const Mat none{nullptr, 0, 0, Kind::F32};
  a.a = has_ga ? as_mat(*grad_advantages) : none;
  a.b = has_gr ? as_mat(*grad_returns) : none;
  a.mask = as_mat(mask);
  a.cut = CutSource{as_mat(cut), has_lp};
  a.bootstrap = none;
  a.out0 = out.out0.data_ptr();
  a.out1 = out.out1.data_ptr();
  a.out2 = out.out2.data_ptr();
  return out;
}

Tensor prepare_boundaries(const char* op, DeviceType device, const Tensor& logprobs,
                          const Tensor& mask, double threshold, CutSource& cut, Mat& mask_mat,
                          Params& p) {
  check_device_type(op, "logprobs", logprobs, device);
  check_2d(op, "logprobs", logprobs);
  check_float_tensor(op, "logprobs", logprobs);
  check_like(op, "mask", mask, "logprobs", logprobs);
  check_mask_dtype(op, mask);
  p = checked_params(op, 0.0, 0.0, 0.0, threshold, true);
  cut = CutSource{as_mat(logprobs), true};
  mask_mat = as_mat(mask);
  return torch::stable::new_empty(logprobs, {logprobs.size(0), logprobs.size(1)}, ScalarType::Bool);
}

}  // namespace sae

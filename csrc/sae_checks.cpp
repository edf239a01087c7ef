#include "sae_checks.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

namespace sae {
namespace {

bool is_float_kind(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

Kind kind_of(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return Kind::F32;
    case at::kDouble: return Kind::F64;
    case at::kHalf: return Kind::F16;
    case at::kBFloat16: return Kind::BF16;
    case at::kBool: case at::kByte: case at::kChar: return Kind::B8;
    case at::kShort: return Kind::I16;
    case at::kInt: return Kind::I32;
    case at::kLong: return Kind::I64;
    default: TORCH_CHECK(false, "sae: unsupported dtype ", s);
  }
}

void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_float_kind(t.scalar_type()), op, ": `", name,
              "` must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
}

void check_mask_dtype(const char* op, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK(is_float_kind(s) || s == at::kBool || s == at::kByte || s == at::kChar ||
                  s == at::kShort || s == at::kInt || s == at::kLong,
              op, ": `mask` must be bool, an integer dtype or float16/bfloat16/float32/float64, got ", s);
}

void check_2d(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, op, ": `", name, "` must be 2-D [B, T], got ", t.dim(),
              "-D with shape ", t.sizes());
}

void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                const at::Tensor& ref) {
  check_2d(op, name, t);
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": `", name, "` must have the shape of `",
              ref_name, "` ", ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but `",
              ref_name, "` is on ", ref.device(), "; all tensors must be on one device");
}

void check_unit(const char* op, const char* name, double x) {
  TORCH_CHECK(x >= 0.0 && x <= 1.0, op, ": `", name, "` must be in [0, 1], got ", x);
}

Params checked_params(const char* op, double gamma, double lam, double lam_inner, double threshold,
                   bool uses_threshold) {
  check_unit(op, "gamma", gamma);
  check_unit(op, "lam", lam);
  check_unit(op, "lam_inner", lam_inner);
  if (uses_threshold) check_unit(op, "threshold", threshold);
  return sae::make_params(gamma, lam, lam_inner, uses_threshold ? threshold : 1.0);
}

void check_bootstrap(const char* op, const at::Tensor& bs, const at::Tensor& ref) {
  TORCH_CHECK(bs.dim() == 1 && bs.size(0) == ref.size(0), op,
              ": `bootstrap` must be 1-D with one value per row [", ref.size(0), "], got shape ",
              bs.sizes());
  check_float_tensor(op, "bootstrap", bs);
  TORCH_CHECK(bs.device() == ref.device(), op, ": `bootstrap` is on ", bs.device(),
              " but `rewards` is on ", ref.device(), "; all tensors must be on one device");
}

}  // namespace

Mat as_mat(const at::Tensor& t) {
  Mat m;
  m.ptr = t.data_ptr();
  m.kind = kind_of(t.scalar_type());
  m.sb = t.dim() >= 1 ? t.stride(0) : 0;
  m.st = t.dim() >= 2 ? t.stride(1) : 0;
  return m;
}

Prepared prepare_forward(const char* op, const at::Tensor& rewards, const at::Tensor& values,
                         const at::Tensor& cut, bool cut_is_logprobs, const at::Tensor& mask,
                         double gamma, double lam, double lam_inner, double threshold,
                         const c10::optional<at::Tensor>& bootstrap) {
  const char* cut_name = cut_is_logprobs ? "logprobs" : "boundaries";
  check_2d(op, "rewards", rewards);
  check_float_tensor(op, "rewards", rewards);
  check_like(op, "values", values, "rewards", rewards);
  check_float_tensor(op, "values", values);
  check_like(op, cut_name, cut, "rewards", rewards);
  if (cut_is_logprobs) {
    check_float_tensor(op, cut_name, cut);
  } else {
    TORCH_CHECK(cut.scalar_type() == at::kBool, op, ": `boundaries` must be a bool tensor, got ",
                cut.scalar_type());
  }
  check_like(op, "mask", mask, "rewards", rewards);
  check_mask_dtype(op, mask);
  const bool has_bs = bootstrap.has_value() && bootstrap->defined();
  if (has_bs) check_bootstrap(op, *bootstrap, rewards);

  Prepared out;
  out.use_double = rewards.scalar_type() == at::kDouble || values.scalar_type() == at::kDouble ||
                   (cut_is_logprobs && cut.scalar_type() == at::kDouble) ||
                   (has_bs && bootstrap->scalar_type() == at::kDouble);
  const auto acc = out.use_double ? at::kDouble : at::kFloat;
  const int64_t B = rewards.size(0), T = rewards.size(1);
  out.out0 = at::empty({B, T}, rewards.options().dtype(acc));
  out.out1 = at::empty({B, T}, rewards.options().dtype(acc));

  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, cut_is_logprobs);
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

Prepared prepare_adjoint(const char* op, const c10::optional<at::Tensor>& grad_advantages,
                         const c10::optional<at::Tensor>& grad_returns, const at::Tensor& mask,
                         const c10::optional<at::Tensor>& logprobs,
                         const c10::optional<at::Tensor>& boundaries, double gamma, double lam,
                         double lam_inner, double threshold) {
  check_2d(op, "mask", mask);
  check_mask_dtype(op, mask);
  const bool has_lp = logprobs.has_value() && logprobs->defined();
  const bool has_bd = boundaries.has_value() && boundaries->defined();
  TORCH_CHECK(has_lp != has_bd, op, ": pass exactly one of `logprobs` and `boundaries`");
  const at::Tensor& cut = has_lp ? *logprobs : *boundaries;
  check_like(op, has_lp ? "logprobs" : "boundaries", cut, "mask", mask);
  if (has_lp) check_float_tensor(op, "logprobs", cut);
  else TORCH_CHECK(cut.scalar_type() == at::kBool, op, ": `boundaries` must be a bool tensor");

  const bool has_ga = grad_advantages.has_value() && grad_advantages->defined();
  const bool has_gr = grad_returns.has_value() && grad_returns->defined();
  bool use_double = false;
  if (has_ga) {
    check_like(op, "grad_advantages", *grad_advantages, "mask", mask);
    check_float_tensor(op, "grad_advantages", *grad_advantages);
    use_double |= grad_advantages->scalar_type() == at::kDouble;
  }
  if (has_gr) {
    check_like(op, "grad_returns", *grad_returns, "mask", mask);
    check_float_tensor(op, "grad_returns", *grad_returns);
    use_double |= grad_returns->scalar_type() == at::kDouble;
  }

  Prepared out;
  out.use_double = use_double;
  const auto acc = use_double ? at::kDouble : at::kFloat;
  const int64_t B = mask.size(0), T = mask.size(1);
  out.out0 = at::empty({B, T}, mask.options().dtype(acc));
  out.out1 = at::empty({B, T}, mask.options().dtype(acc));
  out.out2 = at::empty({B}, mask.options().dtype(acc));

  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, has_lp);
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

at::Tensor prepare_boundaries(const char* op, const at::Tensor& logprobs, const at::Tensor& mask,
                              double threshold, CutSource& cut, Mat& mask_mat, Params& p) {
  check_2d(op, "logprobs", logprobs);
  check_float_tensor(op, "logprobs", logprobs);
  check_like(op, "mask", mask, "logprobs", logprobs);
  check_mask_dtype(op, mask);
  p = checked_params(op, 0.0, 0.0, 0.0, threshold, true);
  cut = CutSource{as_mat(logprobs), true};
  mask_mat = as_mat(mask);
  return at::empty(logprobs.sizes(), logprobs.options().dtype(at::kBool));
}

}  // namespace sae

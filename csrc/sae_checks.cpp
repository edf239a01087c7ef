#include "sae_checks.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/huge_pages.h"

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

// A Tensor (not Tensor?) argument given as None reaches the kernel undefined: say so before
// anything asks it for a device or a shape.
void check_required(const char* op, const char* name, const Tensor& t) {
  SAE_CHECK(t.defined(), op, ": `", name, "` is required, got None");
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

// The inputs' layout: 2-D [B, T], or 1-D [N] with cu_seqlens.
void check_rows(const char* op, const char* name, const Tensor& t, bool packed) {
  if (!packed) return check_2d(op, name, t);
  SAE_CHECK(t.dim() == 1, op, ": `", name, "` must be 1-D [N] when `cu_seqlens` is given, got ",
            t.dim(), "-D with shape ", Shape{t});
}

void check_same_device(const char* op, const char* name, const Tensor& t, const char* ref_name,
                       const Tensor& ref) {
  SAE_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", Where{t}, " but `", ref_name,
            "` is on ", Where{ref}, "; all tensors must be on one device");
}

void check_like(const char* op, const char* name, const Tensor& t, const char* ref_name,
                const Tensor& ref, bool packed = false) {
  check_rows(op, name, t, packed);
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

// A [B] vector of one float per row (bootstrap, per-row lambdas).
void check_per_row(const char* op, const char* name, const Tensor& t, int64_t B, const char* ref_name,
                   const Tensor& ref) {
  SAE_CHECK(t.dim() == 1 && t.size(0) == B, op, ": `", name,
            "` must be 1-D with one value per row [", B, "], got shape ", Shape{t});
  check_float_tensor(op, name, t);
  check_same_device(op, name, t, ref_name, ref);
}

bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// Host tensors' values can be read for free; a device tensor's cannot without a sync, so
// those are left to the kernels' clamping (row_span) and to sae_ext.check_inputs.
bool readable(const Tensor& t) { return t.device().type() == DeviceType::CPU; }

// Per-row lambdas on the host: every value in [0, 1] (NaN is not).
void check_unit_values(const char* op, const char* name, const Tensor& t) {
  if (!readable(t)) return;
  const Mat m = as_mat(t);
  for (int64_t i = 0; i < t.size(0); ++i) {
    const double x = load_number<double>(m.kind, m.ptr, i * m.sb);
    SAE_CHECK(x >= 0.0 && x <= 1.0, op, ": `", name, "` must be in [0, 1], got ", x, " at row ", i);
  }
}

// cu_seqlens: 1-D [B + 1] int32/int64 on the inputs' device; on the host also its values.
// Returns B.
int64_t check_cu_seqlens(const char* op, const Tensor& cu, const char* ref_name, const Tensor& ref) {
  SAE_CHECK(cu.dim() == 1 && cu.size(0) >= 1, op,
            ": `cu_seqlens` must be 1-D [B + 1] (row offsets, starting at 0), got shape ", Shape{cu});
  SAE_CHECK(cu.scalar_type() == ScalarType::Int || cu.scalar_type() == ScalarType::Long, op,
            ": `cu_seqlens` must be int32 or int64, got ", cu.scalar_type());
  check_same_device(op, "cu_seqlens", cu, ref_name, ref);
  const int64_t B = cu.size(0) - 1, N = ref.size(0);
  if (readable(cu)) {
    const Mat m = as_mat(cu);
    SAE_CHECK(load_index(m, 0) == 0, op, ": `cu_seqlens` must start at 0, got ", load_index(m, 0));
    for (int64_t b = 0; b < B; ++b)
      SAE_CHECK(load_index(m, b + 1) >= load_index(m, b), op,
                ": `cu_seqlens` must be non-decreasing, got ", load_index(m, b), " then ",
                load_index(m, b + 1), " at rows ", b, " and ", b + 1);
    SAE_CHECK(load_index(m, B) == N, op, ": `cu_seqlens` must end at N = ", N, " (the length of `",
              ref_name, "`), got ", load_index(m, B));
  }
  return B;
}

// A packed 1-D input as the kernels address it: row offsets come from cu, so sb = 0.
Mat packed_mat(const Tensor& t) {
  Mat m = as_mat(t);
  m.st = m.sb;
  m.sb = 0;
  return m;
}

const Mat kAbsent{nullptr, 0, 0, Kind::B8};

// A preallocated output of an out= overload: the shape and dtype the op would allocate,
// contiguous, on the inputs' device.
void check_out(const char* op, const char* name, const Tensor& out, const Tensor& ref,
               ScalarType dtype) {
  SAE_CHECK(same_shape(out, ref), op, ": `", name, "` must have the shape of the inputs ", Shape{ref},
            ", got ", Shape{out});
  SAE_CHECK(out.scalar_type() == dtype, op, ": `", name, "` must be ", dtype,
            " (the op's output dtype for these inputs), got ", out.scalar_type());
  SAE_CHECK(out.is_contiguous(), op, ": `", name, "` must be contiguous");
  check_same_device(op, name, out, "rewards", ref);
}

// Per-row lambdas and packed rows, shared by both passes. `ref`: the first data tensor.
void fill_rows(const char* op, ScanArgs& a, const Options& opt, const Tensor& ref, const char* ref_name) {
  const int64_t B = a.B;
  const auto per_row_lam = [&](const OptTensor& t, const char* name, Mat& into) {
    if (!given(t)) return;
    check_per_row(op, name, *t, B, ref_name, ref);
    check_unit_values(op, name, *t);
    into = as_mat(*t);
    into.st = 0;
  };
  // Named as the Python API names them (a [B] `lam` reaches the op as lam_rows).
  per_row_lam(opt.lam_rows, "lam", a.lam_rows);
  per_row_lam(opt.lam_inner_rows, "lam_inner", a.lam_inner_rows);
  per_row_lam(opt.lam_critic_rows, "lam_critic", a.lam_critic_rows);
  if (given(opt.cu_seqlens)) a.cu = as_mat(*opt.cu_seqlens);
}

// A fresh output; on the CPU a large one is advised onto huge pages before its first touch.
Tensor new_rows(const Tensor& like, int64_t B, int64_t T, bool packed, bool use_double) {
  const auto dt = use_double ? ScalarType::Double : ScalarType::Float;
  Tensor t = packed ? torch::stable::new_empty(like, {T}, dt)
                    : torch::stable::new_empty(like, {B, T}, dt);
  if (like.device().type() == DeviceType::CPU) {
    cpu::advise_huge_pages(t.data_ptr(), size_t(t.numel()) * (use_double ? 8 : 4));
  }
  return t;
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
                         const Tensor& values, const OptTensor& cut, bool cut_is_logprobs,
                         const OptTensor& mask, double gamma, double lam, double lam_inner,
                         double threshold, const OptTensor& bootstrap, const Options& opt) {
  const char* cut_name = cut_is_logprobs ? "logprobs" : "boundaries";
  const bool packed = given(opt.cu_seqlens);
  check_required(op, "rewards", rewards);
  check_required(op, "values", values);
  check_device_type(op, "rewards", rewards, device);
  check_rows(op, "rewards", rewards, packed);
  check_float_tensor(op, "rewards", rewards);
  check_like(op, "values", values, "rewards", rewards, packed);
  check_float_tensor(op, "values", values);
  const bool has_cut = given(cut);
  if (has_cut) {
    check_like(op, cut_name, *cut, "rewards", rewards, packed);
    if (cut_is_logprobs) {
      check_float_tensor(op, cut_name, *cut);
    } else {
      SAE_CHECK(cut->scalar_type() == ScalarType::Bool, op,
                ": `boundaries` must be a bool tensor, got ", cut->scalar_type());
    }
  }
  const bool has_mask = given(mask);
  if (has_mask) {
    check_like(op, "mask", *mask, "rewards", rewards, packed);
    check_mask_dtype(op, *mask);
  }
  const int64_t B = packed ? check_cu_seqlens(op, *opt.cu_seqlens, "rewards", rewards)
                           : rewards.size(0);
  const int64_t T = packed ? rewards.size(0) : rewards.size(1);
  const bool has_bs = given(bootstrap);
  if (has_bs) check_per_row(op, "bootstrap", *bootstrap, B, "rewards", rewards);

  Prepared out;
  out.use_double = rewards.scalar_type() == ScalarType::Double ||
                   values.scalar_type() == ScalarType::Double ||
                   (cut_is_logprobs && has_cut && cut->scalar_type() == ScalarType::Double) ||
                   (has_bs && bootstrap->scalar_type() == ScalarType::Double);
  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, cut_is_logprobs && has_cut);
  if (opt.lam_critic.has_value() || given(opt.lam_critic_rows)) {
    a.critic = true;
    a.p.lam_critic = opt.lam_critic.value_or(1.0);
    if (opt.lam_critic.has_value()) check_unit(op, "lam_critic", *opt.lam_critic);
  }
  fill_rows(op, a, opt, rewards, "rewards");
  const auto acc = out.use_double ? ScalarType::Double : ScalarType::Float;
  if (given(opt.out_advantages)) {
    check_out(op, "out_advantages", *opt.out_advantages, rewards, acc);
    out.out0 = *opt.out_advantages;
  } else {
    out.out0 = new_rows(rewards, B, T, packed, out.use_double);
  }
  if (given(opt.out_returns)) {
    check_out(op, "out_returns", *opt.out_returns, rewards, acc);
    out.out1 = *opt.out_returns;
  } else {
    out.out1 = new_rows(rewards, B, T, packed, out.use_double);
  }
  const auto mat = [&](const Tensor& t) { return packed ? packed_mat(t) : as_mat(t); };
  a.mask = has_mask ? mat(*mask) : kAbsent;
  a.cut = CutSource{has_cut ? mat(*cut) : kAbsent, cut_is_logprobs && has_cut};
  a.bootstrap = has_bs ? as_mat(*bootstrap) : Mat{nullptr, 0, 0, Kind::F32};
  a.bootstrap.st = 0;
  bind_forward(a, ForwardTensors{mat(rewards), mat(values), out.out0.data_ptr(),
                                 out.out1.data_ptr()});
  return out;
}

Prepared prepare_adjoint(const char* op, DeviceType device, const OptTensor& grad_advantages,
                         const OptTensor& grad_returns, const Tensor& mask,
                         const OptTensor& logprobs, const OptTensor& boundaries, double gamma,
                         double lam, double lam_inner, double threshold, const Options& opt) {
  const bool packed = given(opt.cu_seqlens);
  check_required(op, "mask", mask);
  check_device_type(op, "mask", mask, device);
  check_rows(op, "mask", mask, packed);
  check_mask_dtype(op, mask);
  const bool has_lp = given(logprobs), has_bd = given(boundaries);
  SAE_CHECK(!(has_lp && has_bd), op, ": pass at most one of `logprobs` and `boundaries`");
  if (has_lp) {
    check_like(op, "logprobs", *logprobs, "mask", mask, packed);
    check_float_tensor(op, "logprobs", *logprobs);
  } else if (has_bd) {
    check_like(op, "boundaries", *boundaries, "mask", mask, packed);
    SAE_CHECK(boundaries->scalar_type() == ScalarType::Bool, op,
              ": `boundaries` must be a bool tensor, got ", boundaries->scalar_type());
  }

  const bool has_ga = given(grad_advantages), has_gr = given(grad_returns);
  bool use_double = false;
  if (has_ga) {
    check_like(op, "grad_advantages", *grad_advantages, "mask", mask, packed);
    check_float_tensor(op, "grad_advantages", *grad_advantages);
    use_double |= grad_advantages->scalar_type() == ScalarType::Double;
  }
  if (has_gr) {
    check_like(op, "grad_returns", *grad_returns, "mask", mask, packed);
    check_float_tensor(op, "grad_returns", *grad_returns);
    use_double |= grad_returns->scalar_type() == ScalarType::Double;
  }
  SAE_CHECK(!opt.lam_critic.has_value() && !given(opt.lam_critic_rows) && !given(opt.out_advantages) &&
                !given(opt.out_returns),
            op, ": the adjoint takes no critic lambda and no out= tensors");
  const int64_t B = packed ? check_cu_seqlens(op, *opt.cu_seqlens, "mask", mask) : mask.size(0);
  const int64_t T = packed ? mask.size(0) : mask.size(1);

  Prepared out;
  out.use_double = use_double;
  ScanArgs& a = out.args;
  a.B = B;
  a.T = T;
  a.p = checked_params(op, gamma, lam, lam_inner, threshold, has_lp);
  fill_rows(op, a, opt, mask, "mask");
  out.out0 = new_rows(mask, B, T, packed, use_double);
  out.out1 = new_rows(mask, B, T, packed, use_double);
  out.row_out = torch::stable::new_empty(mask, {B}, use_double ? ScalarType::Double : ScalarType::Float);
  const auto mat = [&](const Tensor& t) { return packed ? packed_mat(t) : as_mat(t); };
  const Mat none{nullptr, 0, 0, Kind::F32};
  a.mask = mat(mask);
  a.cut = has_lp ? CutSource{mat(*logprobs), true}
                 : CutSource{has_bd ? mat(*boundaries) : kAbsent, false};
  a.bootstrap = none;
  bind_adjoint(a, AdjointTensors{has_ga ? mat(*grad_advantages) : none,
                                 has_gr ? mat(*grad_returns) : none, out.out0.data_ptr(),
                                 out.out1.data_ptr(), out.row_out.data_ptr()});
  return out;
}

Tensor prepare_boundaries(const char* op, DeviceType device, const Tensor& logprobs,
                          const Tensor& mask, double threshold, CutSource& cut, Mat& mask_mat,
                          Params& p) {
  check_required(op, "logprobs", logprobs);
  check_required(op, "mask", mask);
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

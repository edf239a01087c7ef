// Runs the CUDA kernel's per-warp algorithm (csrc/cuda/sae_warp.h) on an emulated warp
// and checks it against the contract's recursion, written here literally in float64.
// Torch-free so it builds fast and runs under AddressSanitizer: every input lives in a
// heap buffer of exactly the bytes its view spans, so a read past a row's end is caught.
//
// Usage: test_warp_emulated <case>   (cases listed in main; ctest runs each)
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda/sae_boundaries.h"
#include "emulated/emulated_scan.h"

using namespace sae;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                  \
  do {                                                    \
    ++g_checks;                                           \
    if (!(cond)) {                                        \
      ++g_failures;                                       \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                  \
      std::fprintf(stderr, "\n");                         \
    }                                                     \
  } while (0)

uint16_t float_to_f16_bits(float f) {  // round to nearest even; test data is in normal range
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = int((x >> 23) & 0xff) - 127 + 15;
  uint32_t man = x & 0x7fffffu;
  if (exp <= 0) return uint16_t(sign);  // flush tiny values: fine for test data
  uint32_t h = sign | (uint32_t(exp) << 10) | (man >> 13);
  const uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return uint16_t(h);
}

// A [B, T] tensor stored with element stride `st` along T, in a buffer of exactly the bytes
// the view spans.
struct Buffer {
  std::vector<unsigned char> bytes;
  Mat mat;
};

// offset: elements before the view's first (an unaligned base); pad: elements between rows
// (row starts not 16-byte aligned).
Buffer make_buffer(Kind kind, int64_t B, int64_t T, int64_t st,
                   const std::function<double(int64_t, int64_t)>& value, int64_t offset = 0,
                   int64_t pad = 0) {
  const int size = kind_size(kind);
  const int64_t sb = T * st + pad;
  const int64_t elems = (B == 0 || T == 0) ? 0 : offset + (B - 1) * sb + (T - 1) * st + 1;
  Buffer buf;
  buf.bytes.assign(size_t(elems * size), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      unsigned char* p = buf.bytes.data() + (offset + b * sb + t * st) * size;
      const double x = value(b, t);
      switch (kind) {
        case Kind::F32: { float f = float(x); std::memcpy(p, &f, 4); break; }
        case Kind::F64: std::memcpy(p, &x, 8); break;
        case Kind::F16: { uint16_t h = float_to_f16_bits(float(x)); std::memcpy(p, &h, 2); break; }
        case Kind::BF16: {
          float f = float(x);
          uint32_t u;
          std::memcpy(&u, &f, 4);
          uint16_t h = uint16_t(u >> 16);
          std::memcpy(p, &h, 2);
          break;
        }
        case Kind::B8: *p = x != 0; break;
        case Kind::I16: { int16_t v = int16_t(x); std::memcpy(p, &v, 2); break; }
        case Kind::I32: { int32_t v = int32_t(x); std::memcpy(p, &v, 4); break; }
        case Kind::I64: { int64_t v = int64_t(x); std::memcpy(p, &v, 8); break; }
      }
    }
  }
  buf.mat = Mat{elems ? buf.bytes.data() + offset * size : nullptr, sb, st, kind};
  if (buf.mat.ptr == nullptr) buf.mat.ptr = &buf.bytes;  // any non-null: nothing is read
  return buf;
}

struct Case {
  int64_t B, T;
  Kind value_kind = Kind::F32, mask_kind = Kind::B8, cut_kind = Kind::F32;
  bool from_logprobs = true;
  int64_t st = 1;  // element stride along T of every input
  int64_t offset = 0, pad = 0;  // see make_buffer
  double gamma = 0.99, lam = 0.6, lam_inner = 1.0, threshold = 0.2;
  double mask_density = 0.85;
  bool with_bootstrap = true;
  uint32_t seed = 1;
};

Params make_params(const Case& c) {
  return sae::make_params(c.gamma, c.lam, c.lam_inner, c.threshold);
}

struct Inputs {
  Buffer r, v, cut, mask, bootstrap;
};

Inputs make_inputs(const Case& c) {
  std::mt19937 rng(c.seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif;
  std::vector<double> rs(c.B * c.T), vs(c.B * c.T), cs(c.B * c.T), ms(c.B * c.T);
  for (int64_t b = 0; b < c.B; ++b) {
    // Row shapes: ordinary, trailing padding, all masked, holes only.
    const int kind = int(b % 4);
    const int64_t len = kind == 1 ? int64_t(unif(rng) * c.T) : c.T;
    for (int64_t t = 0; t < c.T; ++t) {
      const int64_t i = b * c.T + t;
      rs[i] = unif(rng) < 0.1 ? normal(rng) : 0.0;
      vs[i] = normal(rng);
      cs[i] = c.from_logprobs ? std::log(unif(rng) * 0.999 + 0.001) : double(unif(rng) < 0.1);
      const bool valid = kind == 2 ? false : (t < len && unif(rng) < c.mask_density);
      ms[i] = valid ? (c.mask_kind == Kind::F32 ? 0.5 : 1.0) : 0.0;
    }
  }
  const auto at = [&](const std::vector<double>& src) {
    return [&src, &c](int64_t b, int64_t t) { return src[b * c.T + t]; };
  };
  Inputs in;
  in.r = make_buffer(c.value_kind, c.B, c.T, c.st, at(rs), c.offset, c.pad);
  in.v = make_buffer(c.value_kind, c.B, c.T, c.st, at(vs), c.offset, c.pad);
  in.cut = make_buffer(c.from_logprobs ? c.cut_kind : Kind::B8, c.B, c.T, c.st, at(cs), c.offset, c.pad);
  in.mask = make_buffer(c.mask_kind, c.B, c.T, c.st, at(ms), c.offset, c.pad);
  std::vector<double> bs(c.B);
  for (auto& x : bs) x = normal(rng);
  in.bootstrap = make_buffer(c.value_kind, 1, c.B, 1, [&](int64_t, int64_t t) { return bs[t]; });
  in.bootstrap.mat.sb = 1;  // as a [B] vector: element b at b * sb
  in.bootstrap.mat.st = 0;
  return in;
}

bool use_double(const Case& c) {
  return c.value_kind == Kind::F64 || (c.from_logprobs && c.cut_kind == Kind::F64);
}

ScanArgs scan_args(const Case& c, const Inputs& in, void* out0, void* out1, void* out2) {
  ScanArgs s;
  s.B = c.B;
  s.T = c.T;
  s.x = in.r.mat;
  s.y = in.v.mat;
  s.mask = in.mask.mat;
  s.cut = CutSource{in.cut.mat, c.from_logprobs};
  s.bootstrap = c.with_bootstrap ? in.bootstrap.mat : Mat{nullptr, 0, 0, Kind::F32};
  s.out0 = out0;
  s.out1 = out1;
  s.row_out = out2;
  s.p = make_params(c);
  return s;
}

// The emulated launch, with the CUDA launcher's choices unless `o` forces others.
emu::ScanOptions g_opts;

template <bool Adjoint>
void run_emulated(const Case& c, const ScanArgs& s, const emu::ScanOptions& o = g_opts) {
  emu::emulate_scan<Adjoint>(s, use_double(c), o);
}

// The contract's recursion, literally, in float64.
void reference(const Case& c, const Inputs& in, std::vector<double>& adv, std::vector<double>& ret) {
  const Params p = make_params(c);
  const CutSource cut{in.cut.mat, c.from_logprobs};
  adv.assign(c.B * c.T, 0.0);
  ret.assign(c.B * c.T, 0.0);
  for (int64_t b = 0; b < c.B; ++b) {
    double next_value = c.with_bootstrap ? load_number<double>(in.bootstrap.mat.kind, in.bootstrap.mat.ptr, b) : 0.0;
    double next_adv = 0.0;
    bool next_is_boundary = false;
    for (int64_t t = c.T - 1; t >= 0; --t) {
      const int64_t off = b * in.r.mat.sb + t * in.r.mat.st;
      if (!load_nonzero(in.mask.mat.kind, in.mask.mat.ptr, off)) continue;
      const double r = load_number<double>(in.r.mat.kind, in.r.mat.ptr, off);
      const double v = load_number<double>(in.v.mat.kind, in.v.mat.ptr, off);
      const double delta = r + c.gamma * next_value - v;
      const double a = delta + c.gamma * (next_is_boundary ? c.lam : c.lam_inner) * next_adv;
      adv[b * c.T + t] = a;
      ret[b * c.T + t] = a + v;
      next_value = v;
      next_adv = a;
      next_is_boundary = is_cut(cut, p, cut.src.ptr, off);
    }
  }
}

template <typename acc_t>
double max_err(const std::vector<acc_t>& got, const std::vector<double>& want, double* scale) {
  double err = 0.0;
  *scale = 1.0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    *scale = std::max(*scale, std::fabs(want[i]));
  }
  return err;
}

template <typename acc_t>
void check_forward_typed(const Case& c, const char* name) {
  const Inputs in = make_inputs(c);
  std::vector<acc_t> adv(c.B * c.T, acc_t(-7)), ret(c.B * c.T, acc_t(-7));
  run_emulated<false>(c, scan_args(c, in, adv.data(), ret.data(), nullptr));
  std::vector<double> ra, rr;
  reference(c, in, ra, rr);
  double scale_a, scale_r;
  const double ea = max_err(adv, ra, &scale_a), er = max_err(ret, rr, &scale_r);
  const double eps = sizeof(acc_t) == 8 ? 1e-15 : 1e-7;
  const double tol = 50 * eps * std::sqrt(double(c.T) + 1) * std::max(scale_a, scale_r);
  CHECK(ea <= tol && er <= tol, "%s B=%lld T=%lld: advantages err %.3g, returns err %.3g > tol %.3g",
        name, (long long)c.B, (long long)c.T, ea, er, tol);
}

void check_forward(const Case& c, const char* name) {
  if (use_double(c)) check_forward_typed<double>(c, name);
  else check_forward_typed<float>(c, name);
}

// The adjoint is right iff <gA, A(x)> + <gR, R(x)> = <dr, r> + <dv, v> + <db, bootstrap>
// for the linear map x = (r, v, bootstrap) -> (A, R), whatever the (random) gA, gR.
template <typename acc_t>
void check_adjoint_typed(const Case& c, const char* name) {
  Case cf = c;
  cf.value_kind = sizeof(acc_t) == 8 ? Kind::F64 : Kind::F32;
  const Inputs in = make_inputs(cf);
  std::vector<acc_t> adv(c.B * c.T), ret(c.B * c.T);
  run_emulated<false>(cf, scan_args(cf, in, adv.data(), ret.data(), nullptr));

  Case cg = cf;
  cg.seed = c.seed + 1000;
  cg.mask_density = 1.0;  // only the gradient values are used from this draw
  const Inputs gin = make_inputs(cg);  // its r, v serve as gA, gR
  ScanArgs s = scan_args(cf, in, nullptr, nullptr, nullptr);
  s.bootstrap = Mat{nullptr, 0, 0, Kind::F32};
  std::vector<acc_t> dr(c.B * c.T, acc_t(-7)), dv(c.B * c.T, acc_t(-7)), db(c.B, acc_t(-7));
  bind_adjoint(s, AdjointTensors{gin.r.mat, gin.v.mat, dr.data(), dv.data(), db.data()});
  run_emulated<true>(cf, s);

  double lhs = 0, rhs = 0, mag = 0;
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t t = 0; t < c.T; ++t) {
      const int64_t off = b * in.r.mat.sb + t * in.r.mat.st, i = b * c.T + t;
      const double ga = load_number<double>(gin.r.mat.kind, gin.r.mat.ptr, off);
      const double gr = load_number<double>(gin.v.mat.kind, gin.v.mat.ptr, off);
      const double r = load_number<double>(in.r.mat.kind, in.r.mat.ptr, off);
      const double v = load_number<double>(in.v.mat.kind, in.v.mat.ptr, off);
      lhs += ga * double(adv[i]) + gr * double(ret[i]);
      rhs += double(dr[i]) * r + double(dv[i]) * v;
      mag += std::fabs(ga * double(adv[i])) + std::fabs(gr * double(ret[i]));
      const bool valid = load_nonzero(in.mask.mat.kind, in.mask.mat.ptr, off);
      CHECK(valid || (dr[i] == 0 && dv[i] == 0), "%s: nonzero gradient at masked (%lld, %lld)",
            name, (long long)b, (long long)t);
    }
    if (cf.with_bootstrap)
      rhs += double(db[b]) * load_number<double>(in.bootstrap.mat.kind, in.bootstrap.mat.ptr, b);
  }
  const double eps = sizeof(acc_t) == 8 ? 1e-14 : 1e-5;
  CHECK(std::fabs(lhs - rhs) <= eps * (mag + 1) * std::sqrt(double(c.T) + 1),
        "%s B=%lld T=%lld: adjoint mismatch <g, f(x)> = %.10g but <f*(g), x> = %.10g", name,
        (long long)c.B, (long long)c.T, lhs, rhs);
}

void check_adjoint(const Case& c, const char* name, bool dbl) {
  if (dbl) check_adjoint_typed<double>(c, name);
  else check_adjoint_typed<float>(c, name);
}

const int64_t kLengths[] = {0, 1, 5, 31, 32, 33, 100, 255, 256, 257, 511, 1000, 2049};

void case_lengths() {
  for (int64_t T : kLengths) {
    Case c{7, T};
    c.seed = uint32_t(T) + 1;
    check_forward(c, "lengths");
  }
  check_forward(Case{0, 50}, "empty batch");
}

void case_dtypes() {
  const Kind values[] = {Kind::F32, Kind::F64, Kind::F16, Kind::BF16};
  const Kind masks[] = {Kind::B8, Kind::I16, Kind::I32, Kind::I64, Kind::F32, Kind::F64, Kind::F16, Kind::BF16};
  for (Kind vk : values) {
    for (Kind mk : masks) {
      for (int64_t T : {37, 300}) {
        Case c{5, T};
        c.value_kind = vk;
        c.mask_kind = mk;
        c.cut_kind = vk;
        c.seed = uint32_t(int(vk) * 100 + int(mk) * 10 + T);
        check_forward(c, "dtypes");
      }
    }
  }
}

void case_strided_and_modes() {
  for (int64_t st : {2, 3}) {
    Case c{6, 333};
    c.st = st;
    check_forward(c, "strided");
  }
  Case b{6, 700};
  b.from_logprobs = false;
  check_forward(b, "boundaries");
  Case g{6, 700};
  g.lam = g.lam_inner = 0.95;
  check_forward(g, "gae");
  Case e{6, 500};
  e.gamma = 1.0;
  e.lam = 0.0;
  e.threshold = 1.0;
  e.with_bootstrap = false;
  check_forward(e, "p=1 lam=0");
  Case z{6, 500};
  z.threshold = 0.0;
  z.gamma = 0.0;
  check_forward(z, "p=0 gamma=0");
}

void case_adjoint() {
  for (int64_t T : kLengths) {
    Case c{5, T};
    c.seed = uint32_t(T) + 7;
    check_adjoint(c, "adjoint f32", false);
    check_adjoint(c, "adjoint f64", true);
  }
  Case s{4, 600};
  s.st = 2;
  s.from_logprobs = false;
  check_adjoint(s, "adjoint strided boundaries", true);
}

// ---- Schedules: every schedule, grid and block order gives the same bits -------------

struct Variant {
  const char* name;
  emu::ScanOptions o;
};

// full: every schedule, grid and order below; else (kinds and layouts, where the loaders
// are under test) the chosen one, a split one and the generic loader.
std::vector<Variant> schedule_variants(bool full) {
  std::vector<Variant> v;
  const auto add = [&](const char* name, int kind, int warps, int64_t max_blocks, uint32_t seed,
                       bool generic = false) {
    emu::ScanOptions o;
    o.force_schedule = kind;
    o.warps = warps;
    o.max_blocks = max_blocks;
    o.order_seed = seed;
    o.force_generic = generic;
    v.push_back({name, o});
  };
  const int R = int(ScheduleKind::RowPerBlock), S = int(ScheduleKind::SplitRow);
  add("chosen", -1, 0, 0, 0);
  if (!full) {
    add("S grid 3 shuffled", S, 0, 3, 17);
    add("generic R W=2", R, 2, 0, 18, true);
    return v;
  }
  add("R W=1 shuffled", R, 1, 0, 11);
  add("R W=2 shuffled", R, 2, 0, 12);
  add("R W=4 grid 2", R, 4, 2, 13);
  add("R W=8 shuffled", R, 8, 0, 14);
  add("S grid 1", S, 0, 1, 16);
  add("S grid 3 shuffled", S, 0, 3, 17);
  add("generic S", S, 0, 2, 19, true);
  return v;
}

template <typename acc_t>
bool same_bits(const std::vector<acc_t>& a, const std::vector<acc_t>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(acc_t)) == 0);
}

template <typename acc_t>
size_t first_diff(const std::vector<acc_t>& a, const std::vector<acc_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(acc_t)) != 0) return i;
  return a.size();
}

// Row b of s as a batch of its own (the same memory, B = 1).
ScanArgs row_alone(const ScanArgs& s, int64_t b, int acc_size, void* out0, void* out1, void* out2) {
  ScanArgs r = s;
  const auto shift = [&](Mat& m) {
    if (m.ptr) m.ptr = static_cast<const char*>(m.ptr) + b * m.sb * kind_size(m.kind);
  };
  shift(r.x);
  shift(r.y);
  shift(r.mask);
  shift(r.cut.src);
  shift(r.bootstrap);
  r.B = 1;
  r.out0 = out0;
  r.out1 = out1;
  r.row_out = out2;
  (void)acc_size;
  return r;
}

// Runs `s` (forward or adjoint) under every variant and row by row; all must match the
// first variant bit for bit. Returns the first variant's outputs.
template <bool Adjoint, typename acc_t>
void check_schedules_on(const Case& c, const ScanArgs& base, const char* name, bool full) {
  const int64_t n = c.B * c.T;
  const auto run = [&](const ScanArgs& s0, const emu::ScanOptions& o, std::vector<acc_t>& o0,
                       std::vector<acc_t>& o1, std::vector<acc_t>& o2) {
    o0.assign(size_t(s0.B * s0.T), acc_t(-7));
    o1.assign(size_t(s0.B * s0.T), acc_t(-7));
    o2.assign(size_t(s0.B), acc_t(-7));
    ScanArgs s = s0;
    s.out0 = o0.data();
    s.out1 = o1.data();
    s.row_out = Adjoint ? o2.data() : nullptr;
    emu::emulate_scan<Adjoint>(s, sizeof(acc_t) == 8, o);
  };
  const std::vector<Variant> variants = schedule_variants(full);
  std::vector<acc_t> w0, w1, w2;
  run(base, variants[0].o, w0, w1, w2);
  for (size_t i = 1; i < variants.size(); ++i) {
    std::vector<acc_t> g0, g1, g2;
    run(base, variants[i].o, g0, g1, g2);
    CHECK(same_bits(g0, w0) && same_bits(g1, w1) && (!Adjoint || same_bits(g2, w2)),
          "%s B=%lld T=%lld: schedule '%s' differs from '%s' (out0 first diff at %zu of %lld)", name,
          (long long)c.B, (long long)c.T, variants[i].name, variants[0].name, first_diff(g0, w0),
          (long long)n);
  }
  for (int64_t b : {int64_t(0), c.B - 1}) {
    if (b < 0 || (!full && b > 0)) continue;
    std::vector<acc_t> g0, g1, g2;
    run(row_alone(base, b, sizeof(acc_t), nullptr, nullptr, nullptr), variants[0].o, g0, g1, g2);
    const std::vector<acc_t> r0(w0.begin() + b * c.T, w0.begin() + (b + 1) * c.T);
    const std::vector<acc_t> r1(w1.begin() + b * c.T, w1.begin() + (b + 1) * c.T);
    CHECK(same_bits(g0, r0) && same_bits(g1, r1) && (!Adjoint || std::memcmp(&g2[0], &w2[b], sizeof(acc_t)) == 0),
          "%s B=%lld T=%lld: row %lld alone differs from the batch", name, (long long)c.B,
          (long long)c.T, (long long)b);
  }
}

template <typename acc_t>
void check_schedules_typed(const Case& c, const char* name, bool full, bool null_grad) {
  const Inputs in = make_inputs(c);
  const ScanArgs fwd = scan_args(c, in, nullptr, nullptr, nullptr);
  check_schedules_on<false, acc_t>(c, fwd, name, full);
  // Adjoint: the draw's rewards and values serve as gradients, as in check_adjoint_typed.
  Case cg = c;
  cg.seed = c.seed + 1000;
  cg.mask_density = 1.0;
  cg.value_kind = sizeof(acc_t) == 8 ? Kind::F64 : Kind::F32;
  const Inputs gin = make_inputs(cg);
  ScanArgs adj = fwd;
  adj.x = gin.r.mat;
  adj.y = gin.v.mat;
  adj.bootstrap = Mat{nullptr, 0, 0, Kind::F32};
  check_schedules_on<true, acc_t>(c, adj, name, full);
  if (!null_grad) return;
  // One gradient absent (reads as zeros), as autograd passes when one output is unused.
  adj.y = Mat{nullptr, 0, 0, Kind::F32};
  check_schedules_on<true, acc_t>(c, adj, name, full);
}

void check_schedules(const Case& c, const char* name, bool full = false, bool null_grad = false) {
  if (use_double(c)) check_schedules_typed<double>(c, name, full, null_grad);
  else check_schedules_typed<float>(c, name, full, null_grad);
}

const int64_t kScheduleLengths[] = {0, 1, 7, 8, 9, 255, 256, 257, 511, 2049};

void case_schedules() {
  for (int64_t T : kScheduleLengths) {
    Case c{3, T};
    c.seed = uint32_t(T) + 3;
    check_schedules(c, "schedules", true, T == 257);
  }
  // Long enough that the chosen schedule splits rows (16+ chunks, fewer rows than SMs).
  Case l{2, 16 * 256 + 3};
  check_schedules(l, "schedules split-chosen", true);
  check_forward(l, "split-chosen vs reference");
}

void case_schedule_kinds() {
  const Kind values[] = {Kind::F32, Kind::BF16, Kind::F16, Kind::F64};
  const Kind masks[] = {Kind::B8, Kind::F32, Kind::BF16, Kind::F16, Kind::F64, Kind::I64};
  for (Kind vk : values) {
    for (Kind mk : masks) {
      for (bool lp : {true, false}) {
        Case c{2, 312};  // every run full and aligned: the wide loads of every kind
        c.value_kind = vk;
        c.mask_kind = mk;
        c.cut_kind = vk;
        c.from_logprobs = lp;
        c.seed = uint32_t(int(vk) * 100 + int(mk) * 10 + lp);
        check_schedules(c, "kinds");
        check_forward(c, "kinds vs reference");
      }
    }
  }
}

void case_schedule_layouts() {
  struct Layout {
    const char* name;
    int64_t st, offset, pad;
  };
  const Layout layouts[] = {{"contiguous", 1, 0, 0}, {"unaligned base", 1, 1, 0},
                            {"unaligned rows", 1, 0, 3}, {"strided", 2, 0, 0},
                            {"strided unaligned", 3, 1, 1}};
  for (const Layout& lay : layouts) {
    for (Kind vk : {Kind::F32, Kind::BF16, Kind::F64}) {
      for (int64_t T : {9, 312}) {  // 312: whole runs, so contiguous views take the wide loads
        Case c{2, T};
        c.st = lay.st;
        c.offset = lay.offset;
        c.pad = lay.pad;
        c.value_kind = vk;
        c.cut_kind = vk;
        c.seed = uint32_t(T * 7 + int(vk));
        check_schedules(c, lay.name);
        check_forward(c, lay.name);
        check_adjoint(c, lay.name, vk == Kind::F64);
      }
    }
  }
  // Bootstrap off, hyperparameter edges, boundaries mode, through every schedule.
  Case e{4, 600};
  e.with_bootstrap = false;
  e.gamma = 1.0;
  e.lam = 0.0;
  check_schedules(e, "no bootstrap, lam=0");
  Case g{4, 600};
  g.gamma = 0.0;
  g.threshold = 0.0;
  check_schedules(g, "gamma=0, p=0");
}

// ---- Segmentation op: the vectorised per-run code against is_cut / load_nonzero -------

void case_boundaries() {
  const Kind cuts[] = {Kind::F32, Kind::BF16, Kind::F16, Kind::F64};
  const Kind masks[] = {Kind::B8, Kind::F32, Kind::BF16, Kind::F16, Kind::F64, Kind::I32};
  for (Kind ck : cuts) {
    for (Kind mk : masks) {
      for (int64_t T : {1, 8, 13, 64, 301}) {
        for (int64_t offset : {0, 1}) {
          Case c{3, T};
          c.cut_kind = ck;
          c.value_kind = ck;
          c.mask_kind = mk;
          c.offset = offset;
          c.seed = uint32_t(T + int(ck) * 10 + int(mk));
          const Inputs in = make_inputs(c);
          const CutSource cut{in.cut.mat, true};
          const Params p = make_params(c);
          for (bool generic : {false, true}) {
            std::vector<unsigned char> out(size_t(c.B * c.T), 7);
            bool* o = reinterpret_cast<bool*>(out.data());
            const BoundaryVec vec = boundary_vec_flags(cut, in.mask.mat, o, c.T);
            with_boundary_loader(cut, in.mask.mat, generic, [&](auto loader) {
              using L = decltype(loader);
              for (int64_t b = 0; b < c.B; ++b)
                for (int64_t t0 = 0; t0 < c.T; t0 += kPerLane) boundaries_run<L>(cut, in.mask.mat, p, vec, c.T, b, t0, o);
            });
            int bad = 0;
            for (int64_t b = 0; b < c.B; ++b)
              for (int64_t t = 0; t < c.T; ++t) {
                const int64_t off = b * in.cut.mat.sb + t * in.cut.mat.st;
                const bool want = load_nonzero(in.mask.mat.kind, in.mask.mat.ptr, off) &&
                                  is_cut(cut, p, cut.src.ptr, off);
                bad += out[b * c.T + t] != (want ? 1 : 0);
              }
            CHECK(bad == 0, "boundaries cut kind %d mask kind %d T=%lld offset %lld %s: %d wrong flags",
                  int(ck), int(mk), (long long)T, (long long)offset, generic ? "generic" : "specialised", bad);
          }
        }
      }
    }
  }
}

// The emulator itself must report divergent shuffles rather than hang.
// ---- issue 12's variants: packed rows, per-row lambdas, a critic chain, absent mask or cut
// source. Every 1-D input is a buffer of exactly N elements (so AddressSanitizer catches a
// read past the last packed row), per-row tensors exactly B.
struct Packed {
  std::vector<int64_t> lengths;
  Kind value_kind = Kind::F32;
  bool with_mask = true, with_cut = true, per_row = true, critic = false, with_bootstrap = true;
  int64_t pad_start = 0;  // elements before the first row (misaligns every row start)
  uint32_t seed = 1;
};

struct PackedInputs {
  int64_t B = 0, N = 0;
  std::vector<int64_t> cu;
  Buffer r, v, lp, mask, lam, lam_inner, lam_critic, bootstrap;
  std::vector<double> lam_d, lam_inner_d, lam_critic_d;
};

Buffer vector_buffer(Kind kind, int64_t n, const std::function<double(int64_t)>& f) {
  Buffer b = make_buffer(kind, 1, n, 1, [&](int64_t, int64_t t) { return f(t); });
  b.mat.sb = 1;  // element i at i * sb
  b.mat.st = 0;
  return b;
}

PackedInputs make_packed(const Packed& c) {
  PackedInputs in;
  in.B = int64_t(c.lengths.size());
  in.cu.push_back(c.pad_start);
  for (int64_t n : c.lengths) in.cu.push_back(in.cu.back() + n);
  in.N = in.cu.back();
  std::mt19937 rng(c.seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif;
  std::vector<double> rs(in.N), vs(in.N), ls(in.N), ms(in.N);
  for (int64_t i = 0; i < in.N; ++i) {
    rs[i] = normal(rng);
    vs[i] = normal(rng);
    ls[i] = std::log(unif(rng) * 0.999 + 0.001);
    ms[i] = unif(rng) < 0.8;
  }
  const auto flat = [&](Kind k, const std::vector<double>& src) {
    Buffer b = make_buffer(k, 1, in.N, 1, [&src](int64_t, int64_t t) { return src[t]; });
    b.mat.sb = 0;  // packed: row b's tokens are (b, cu[b] + t)
    return b;
  };
  in.r = flat(c.value_kind, rs);
  in.v = flat(c.value_kind, vs);
  in.lp = flat(c.value_kind, ls);
  in.mask = flat(Kind::B8, ms);
  for (int64_t b = 0; b < in.B; ++b) {
    in.lam_d.push_back(unif(rng));
    in.lam_inner_d.push_back(unif(rng));
    in.lam_critic_d.push_back(unif(rng));
  }
  // bf16 per-row lambdas: the values the kernel reads are the rounded ones
  in.lam = vector_buffer(Kind::BF16, in.B, [&](int64_t b) { return in.lam_d[b]; });
  in.lam_inner = vector_buffer(Kind::F32, in.B, [&](int64_t b) { return in.lam_inner_d[b]; });
  in.lam_critic = vector_buffer(Kind::F64, in.B, [&](int64_t b) { return in.lam_critic_d[b]; });
  for (int64_t b = 0; b < in.B; ++b) in.lam_d[b] = load_number<double>(Kind::BF16, in.lam.mat.ptr, b);
  for (int64_t b = 0; b < in.B; ++b) in.lam_inner_d[b] = load_number<double>(Kind::F32, in.lam_inner.mat.ptr, b);
  in.bootstrap = vector_buffer(c.value_kind, in.B, [&](int64_t) { return normal(rng); });
  return in;
}

ScanArgs packed_args(const Packed& c, const PackedInputs& in, const Params& p) {
  ScanArgs s;
  s.B = in.B;
  s.T = in.N;
  s.x = in.r.mat;
  s.y = in.v.mat;
  s.mask = c.with_mask ? in.mask.mat : Mat{nullptr, 0, 0, Kind::B8};
  s.cut = CutSource{c.with_cut ? in.lp.mat : Mat{nullptr, 0, 0, c.value_kind}, true};
  s.bootstrap = c.with_bootstrap ? in.bootstrap.mat : Mat{nullptr, 0, 0, Kind::F32};
  s.p = p;
  s.p.lam_critic = 0.85;
  if (c.per_row) {
    s.lam_rows = in.lam.mat;
    s.lam_inner_rows = in.lam_inner.mat;
    s.lam_critic_rows = in.lam_critic.mat;
  }
  s.critic = c.critic;
  s.cu = Mat{in.cu.data(), 1, 0, Kind::I64};
  return s;
}

// The contract's recursion per packed row, literally, in float64 (returns from the critic
// chain when c.critic).
void packed_reference(const Packed& c, const PackedInputs& in, const ScanArgs& s,
                      std::vector<double>& adv, std::vector<double>& ret) {
  adv.assign(in.N, 0.0);
  ret.assign(in.N, 0.0);
  for (int64_t b = 0; b < in.B; ++b) {
    const double lam = c.per_row ? in.lam_d[b] : s.p.lam;
    const double lam_in = c.per_row ? in.lam_inner_d[b] : s.p.lam_inner;
    const double lc = c.per_row ? in.lam_critic_d[b] : s.p.lam_critic;
    const double boot = c.with_bootstrap ? load_number<double>(c.value_kind, in.bootstrap.mat.ptr, b) : 0.0;
    double nv = boot, na = 0.0, nvc = boot, nac = 0.0;
    bool nb = false;
    for (int64_t t = in.cu[b + 1] - 1; t >= in.cu[b]; --t) {
      if (c.with_mask && !load_nonzero(Kind::B8, in.mask.mat.ptr, t)) continue;
      const double r = load_number<double>(c.value_kind, in.r.mat.ptr, t);
      const double v = load_number<double>(c.value_kind, in.v.mat.ptr, t);
      const double a = r + s.p.gamma * nv - v + s.p.gamma * (nb ? lam : lam_in) * na;
      const double ac = r + s.p.gamma * nvc - v + s.p.gamma * lc * nac;
      adv[t] = a;
      ret[t] = c.critic ? ac + v : a + v;
      nv = nvc = v;
      na = a;
      nac = ac;
      nb = c.with_cut && is_cut(s.cut, s.p, s.cut.src.ptr, t);
    }
  }
}

template <typename acc_t>
void check_packed_typed(const Packed& c, const char* name) {
  const PackedInputs in = make_packed(c);
  const Params p = sae::make_params(0.99, 0.6, 0.95, 0.2);
  std::vector<double> ra, rr;
  {
    ScanArgs s = packed_args(c, in, p);
    packed_reference(c, in, s, ra, rr);
  }
  const double eps = sizeof(acc_t) == 8 ? 1e-15 : 1e-7;
  const int64_t longest = *std::max_element(c.lengths.begin(), c.lengths.end());
  emu::ScanOptions split = g_opts, split1 = g_opts;
  split.force_schedule = split1.force_schedule = int(ScheduleKind::SplitRow);
  split.max_blocks = 3;  // grid-stride over the slots
  split.order_seed = 5;
  split1.max_blocks = 1;  // one block walks every slot, pass 3 backwards
  std::vector<emu::ScanOptions> schedules = {g_opts, split, split1};
  for (int w : {1, 2, 4, 8}) {  // the bits must not depend on the W the launcher picks
    emu::ScanOptions r = g_opts;
    r.force_schedule = int(ScheduleKind::RowPerBlock);
    r.warps = w;
    r.order_seed = uint32_t(9 + w);
    schedules.push_back(r);
  }
  std::vector<acc_t> first_adv, first_ret;
  for (const emu::ScanOptions& o : schedules) {
    // Outputs start as garbage: every valid token must be written, every masked one zeroed.
    std::vector<acc_t> adv(in.N, acc_t(-7)), ret(in.N, acc_t(-7));
    ScanArgs s = packed_args(c, in, p);
    s.out0 = adv.data();
    s.out1 = ret.data();
    emu::emulate_scan<false>(s, sizeof(acc_t) == 8, o);
    std::fill(adv.begin(), adv.begin() + c.pad_start, acc_t(0));  // no row's tokens
    std::fill(ret.begin(), ret.begin() + c.pad_start, acc_t(0));
    double sa, sr;
    const double ea = max_err(adv, ra, &sa), er = max_err(ret, rr, &sr);
    const double tol = 50 * eps * std::sqrt(double(longest) + 1) * std::max(sa, sr);
    CHECK(ea <= tol && er <= tol, "%s schedule %d W=%d: advantages err %.3g, returns err %.3g > tol %.3g",
          name, o.force_schedule, o.warps, ea, er, tol);
    if (first_adv.empty()) {
      first_adv = adv;
      first_ret = ret;
    } else {
      CHECK(std::memcmp(adv.data(), first_adv.data(), adv.size() * sizeof(acc_t)) == 0 &&
                std::memcmp(ret.data(), first_ret.data(), ret.size() * sizeof(acc_t)) == 0,
            "%s schedule %d W=%d: bits differ from the launcher's schedule", name, o.force_schedule, o.warps);
    }
  }
}

void check_packed(const Packed& c, const char* name) {
  if (c.value_kind == Kind::F64) check_packed_typed<double>(c, name);
  else check_packed_typed<float>(c, name);
}

// The adjoint of packed rows with per-row lambdas: <g, f(x)> = <f*(g), x> as check_adjoint.
void check_packed_adjoint(const Packed& c, const char* name) {
  const PackedInputs in = make_packed(c), gin = make_packed(Packed{c.lengths, c.value_kind, true, true,
                                                                   true, false, true, c.pad_start, c.seed + 7});
  const Params p = sae::make_params(0.97, 0.6, 0.95, 0.2);
  std::vector<float> adv(in.N), ret(in.N), dr(in.N, -7.f), dv(in.N, -7.f), db(in.B, -7.f);
  ScanArgs s = packed_args(c, in, p);
  s.critic = false;
  s.out0 = adv.data();
  s.out1 = ret.data();
  emu::emulate_scan<false>(s, false, g_opts);
  ScanArgs g = s;
  g.bootstrap = Mat{nullptr, 0, 0, Kind::F32};
  bind_adjoint(g, AdjointTensors{gin.r.mat, gin.v.mat, dr.data(), dv.data(), db.data()});
  emu::emulate_scan<true>(g, false, g_opts);
  double lhs = 0, rhs = 0, mag = 0;
  for (int64_t i = c.pad_start; i < in.N; ++i) {
    const double ga = load_number<double>(c.value_kind, gin.r.mat.ptr, i);
    const double gr = load_number<double>(c.value_kind, gin.v.mat.ptr, i);
    lhs += ga * adv[i] + gr * ret[i];
    rhs += dr[i] * load_number<double>(c.value_kind, in.r.mat.ptr, i) +
           dv[i] * load_number<double>(c.value_kind, in.v.mat.ptr, i);
    mag += std::fabs(ga * adv[i]) + std::fabs(gr * ret[i]);
  }
  for (int64_t b = 0; b < in.B; ++b)
    if (c.with_bootstrap) rhs += db[b] * load_number<double>(c.value_kind, in.bootstrap.mat.ptr, b);
  CHECK(std::fabs(lhs - rhs) <= 1e-5 * (mag + 1) * 30, "%s: adjoint mismatch %.10g vs %.10g", name, lhs, rhs);
}

// Packed row lengths with empty rows, a lone token, partial and whole chunks.
const std::vector<int64_t> kMixedLengths = {0, 1, 7, 256, 300, 0, 33, 1029, 8};

// One value dtype per case, so that ctest runs the three side by side.
void variants_of(Kind vk) {
  const std::vector<int64_t>& mixed = kMixedLengths;
  const std::vector<int64_t> aligned = {8, 256, 0, 520, 64};
  for (bool mask : {true, false}) {
    for (bool cut : {true, false}) {
      for (bool critic : {false, true}) {
        Packed c;
        c.lengths = mixed;
        c.value_kind = vk;
        c.with_mask = mask;
        c.with_cut = cut;
        c.critic = critic;
        c.seed = uint32_t(int(vk) * 16 + mask * 4 + cut * 2 + critic);
        check_packed(c, "packed mixed");
        c.lengths = aligned;
        c.per_row = !critic;
        c.with_bootstrap = !cut;
        check_packed(c, "packed aligned");
        c.pad_start = 3;  // every row start misaligned
        check_packed(c, "packed offset");
      }
    }
  }
}

void case_variants_f32() { variants_of(Kind::F32); }
void case_variants_bf16() { variants_of(Kind::BF16); }
void case_variants_f64() { variants_of(Kind::F64); }

void case_variants_adjoint() {
  Packed c;
  c.lengths = kMixedLengths;
  check_packed_adjoint(c, "packed adjoint");
  c.with_cut = false;
  c.pad_start = 5;
  check_packed_adjoint(c, "packed adjoint, no cuts");
}

// Pass 2 on its own, for rows whose chain takes several shared-memory batches (kChainBatch
// chunks each; the end-to-end cases hardly reach one): a workspace of random chunk totals,
// chained by the emulated blocks under several grids and block orders, must give the carries
// in and the row outputs of one plain serial chain in processing order, bit for bit.
template <typename acc_t, bool Adjoint, bool Critic>
void check_chain_rows(const std::vector<int64_t>& lengths, bool packed, uint32_t seed) {
  const int64_t B = int64_t(lengths.size());
  std::vector<int64_t> cu(1, 3);  // packed: rows start mid-chunk
  for (int64_t n : lengths) cu.push_back(cu.back() + n);
  const int64_t T = packed ? cu.back() : *std::max_element(lengths.begin(), lengths.end());
  std::vector<float> boot(static_cast<size_t>(B));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unif(-1.5, 1.5);
  for (auto& b : boot) b = float(unif(rng));
  ScanArgs s{};
  s.B = B;
  s.T = T;
  s.bootstrap = Mat{boot.data(), 1, 0, Kind::F32};
  if (packed) s.cu = Mat{cu.data(), 1, 0, Kind::I64};
  const int64_t slots = num_slots(B, T, packed);
  std::vector<acc_t> ws0(size_t(6 * slots));
  for (int64_t i = 0; i < 2 * slots; ++i) ws0[i] = acc_t(unif(rng));        // ta, tb
  for (int64_t i = 3 * slots; i < 5 * slots; ++i) ws0[i] = acc_t(unif(rng));  // cta, ctb
  // the reference: one thread, row by row, in processing order
  std::vector<acc_t> want = ws0, want_row(size_t(B), acc_t(-7));
  for (int64_t row = 0; row < B; ++row) {
    const RowSpan sp = row_span(s, row);
    const int64_t n = num_chunks(sp.len), u0 = first_slot(s, row, sp);
    const acc_t init = initial_carry<acc_t, Adjoint>(s, row);
    Carry<acc_t> carry{init, init};
    for (int64_t pos = 0; pos < n; ++pos) {
      const int64_t u = u0 + chunk_at<Adjoint>(n, pos);
      want[2 * slots + u] = carry.s;
      if (Critic) want[5 * slots + u] = carry.c;
      carry = carry_out<Critic>(Affine<acc_t>{want[u], want[slots + u]},
                                Affine<acc_t>{want[3 * slots + u], want[4 * slots + u]}, carry);
    }
    if (Adjoint) want_row[row] = carry.s;
  }
  for (int64_t grid : {B, int64_t(1), int64_t(2)}) {
    for (uint32_t order : {0u, seed}) {
      std::vector<acc_t> ws = ws0, got_row(size_t(B), acc_t(-7));
      ScanArgs g = s;
      g.row_out = Adjoint ? got_row.data() : nullptr;
      emu::run_grid(std::min(grid, B), kChainWarps, order,
                    [&](emu::EmulatedWarp& w, emu::EmulatedBlock& b) {
                      split_chain_rows<acc_t, Adjoint, Critic>(w, b, g, ws.data());
                    },
                    chain_shared_bytes<acc_t, Critic>());
      // the carries in of every real slot (padding slots of packed rows stay as they were)
      CHECK(same_bits(ws, want) && (!Adjoint || same_bits(got_row, want_row)),
            "pass 2 %s%s%s, %lld rows, grid %lld, order %u: carries differ from the serial chain (first at %zu)",
            packed ? "packed " : "", Adjoint ? "adjoint" : "forward", Critic ? " critic" : "", (long long)B,
            (long long)grid, order, first_diff(ws, want));
    }
  }
}

void case_chain_batches() {
  const int64_t K = kChunk, N = kChainBatch;
  // 1 chunk, a batch less one, exactly one, one more, two and a partial third
  const std::vector<int64_t> lengths = {1, (N - 1) * K, N * K, N * K + 1, (2 * N + 37) * K - 9};
  check_chain_rows<float, false, false>(lengths, false, 1);
  check_chain_rows<float, true, false>(lengths, false, 2);
  check_chain_rows<double, false, true>(lengths, false, 3);
  check_chain_rows<float, false, true>({(N + 5) * K, 0, 7, (2 * N + 1) * K + 100}, true, 4);
  check_chain_rows<double, true, false>({(N + 5) * K, 0, 7, (2 * N + 1) * K + 100}, true, 5);
  // End to end: one row of two batches, split as the launcher chooses, against the reference.
  Case c{1, (N + 2) * K - 3};
  c.seed = 41;
  check_forward(c, "chain batches vs reference");
}

// The launcher's W (row_warps) for the documented shapes, with the occupancy registers allow.
void case_row_warps() {
  struct Want {
    int64_t B, T;
    int regs, warps;
  };
  // 96 registers (float32 rows kernel): 21, 10, 5, 2 blocks per SM at W = 1, 2, 4, 8;
  // 72 (bfloat16): 28, 14, 7, 3.
  const Want wants[] = {
      {256, 8192, 96, 8},   // 1 wave either way: fewest rounds
      {512, 16384, 96, 4},  // W = 8: 2 waves x 8 rounds, W = 4: 1 x 16: a tie, fewer waves
      {512, 16384, 72, 4},
      {4096, 1024, 96, 4},  // W = 1: 2 waves x 4 rounds, W = 4: 7 x 1
      {4096, 1024, 72, 4},  // W = 4: 5 waves x 1 round
      {300000, 9, 96, 1},   // one chunk: W = 1 only
      {132, 300, 96, 2},    // two chunks: at most W = 2
  };
  for (const Want& w : wants) {
    const Schedule sc = choose_schedule(w.B, w.T, 132, modelled_row_occupancy(w.regs));
    CHECK(sc.kind == ScheduleKind::RowPerBlock && sc.warps == w.warps,
          "row_warps B=%lld T=%lld regs=%d: W=%d, want %d", (long long)w.B, (long long)w.T, w.regs,
          sc.warps, w.warps);
  }
  const RowOccupancy o96 = modelled_row_occupancy(96);
  CHECK(o96.blocks_per_sm[0] == 21 && o96.blocks_per_sm[1] == 10 && o96.blocks_per_sm[2] == 5 &&
            o96.blocks_per_sm[3] == 2,
        "modelled occupancy at 96 registers: %d %d %d %d", o96.blocks_per_sm[0], o96.blocks_per_sm[1],
        o96.blocks_per_sm[2], o96.blocks_per_sm[3]);
  const Schedule sp = choose_schedule(32, 131072, 132, o96);
  CHECK(sp.kind == ScheduleKind::SplitRow && sp.chain_blocks == 32 && sp.blocks == 32 * 512 / kSplitWarps,
        "32 x 131072: split, a pass-2 block per row");
}

template <class Fn>
bool diverges(Fn fn) {
  try {
    emu::run_warp(fn, std::chrono::seconds(20));
  } catch (const emu::WarpDivergence& e) {
    return true;
  }
  return false;
}

void case_emulator() {
  // Shuffle semantics: out-of-range sources return the caller's own value.
  std::vector<int> down(32), up(32), idx(32);
  emu::run_warp([&](emu::EmulatedWarp& w) {
    const int l = w.lane();
    down[l] = w.shfl_down(l * 10, 3);
    up[l] = w.shfl_up(l * 10, 5);
    idx[l] = w.shfl_idx(l * 10, 31 - l);
  });
  for (int l = 0; l < 32; ++l) {
    CHECK(down[l] == (l + 3 < 32 ? (l + 3) * 10 : l * 10), "shfl_down lane %d got %d", l, down[l]);
    CHECK(up[l] == (l >= 5 ? (l - 5) * 10 : l * 10), "shfl_up lane %d got %d", l, up[l]);
    CHECK(idx[l] == (31 - l) * 10, "shfl_idx lane %d got %d", l, idx[l]);
  }
  CHECK(!diverges([](emu::EmulatedWarp& w) { w.shfl_down(1.0f, 1); }), "a uniform shuffle diverged");
  CHECK(diverges([](emu::EmulatedWarp& w) {
          if (w.lane() != 5) w.shfl_down(1.0f, 1);
        }),
        "a lane that skips a shuffle and returns was not reported");
  CHECK(diverges([](emu::EmulatedWarp& w) {
          if (w.lane() == 9) w.shfl_down(1.0f, 2);
          else w.shfl_down(1.0f, 1);
        }),
        "lanes at different shuffles were not reported");
  CHECK(diverges([](emu::EmulatedWarp& w) {
          if (w.lane() < 16) w.shfl_up(1, 1);
          w.shfl_up(2, 1);
        }),
        "half a warp at an extra shuffle was not reported");
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, void (*)()> cases = {
      {"lengths", case_lengths},     {"dtypes", case_dtypes}, {"strided_and_modes", case_strided_and_modes},
      {"adjoint", case_adjoint},     {"emulator", case_emulator},
      {"schedules", case_schedules}, {"schedule_kinds", case_schedule_kinds},
      {"schedule_layouts", case_schedule_layouts}, {"boundaries", case_boundaries},
      {"variants_f32", case_variants_f32}, {"variants_bf16", case_variants_bf16},
      {"variants_f64", case_variants_f64}, {"variants_adjoint", case_variants_adjoint},
      {"chain_batches", case_chain_batches},
      {"row_warps", case_row_warps},
  };
  std::vector<std::string> run;
  if (argc > 1) run.assign(argv + 1, argv + argc);
  else for (const auto& kv : cases) run.push_back(kv.first);
  for (const auto& name : run) {
    const auto it = cases.find(name);
    if (it == cases.end()) {
      std::fprintf(stderr, "unknown case %s\n", name.c_str());
      return 2;
    }
    it->second();
  }
  std::printf("%d checks: %d passed, %d failed\n", g_checks, g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}

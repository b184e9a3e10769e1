// CPU kernels of the chunk-bag op family (contracts in chunk_bag_ops.cpp).
// Determinism: the unique pass is sequential (first-occurrence order); forward is parallel over bags and
// backward over unique rows, each summing its occurrences in a fixed order, and every pool slot belongs to
// exactly one unique row, so the fused optimizer needs no atomics and results do not depend on threads.
// The pool is float32, bfloat16 or int8 with a scale per chunk (weight_t): arithmetic is float32 in every case,
// and chunks are read and written through PoolCodec (pool_codec.h), which rounds a low-precision pool's updated
// weights stochastically with the call's rounding_seed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "chunk_bag/chunk_bag_entry.h"
#include "common/layout.h"
#include "chunk_bag/pool_codec.h"

namespace emb_opt {
namespace {

template <typename index_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> unique_impl(
    const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& feature_table,
    const at::Tensor& table_rows, int64_t batch_size) {
  const int64_t num_features = feature_table.numel();
  const int64_t num_bags = num_features * batch_size;
  const int64_t nnz = offsets.data_ptr<int64_t>()[num_bags];
  const index_t* v = values.data_ptr<index_t>();
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int32_t* ft = feature_table.data_ptr<int32_t>();
  const int64_t* rows = table_rows.data_ptr<int64_t>();
  auto long_opts = values.options().dtype(at::kLong);
  auto int_opts = values.options().dtype(at::kInt);
  auto inverse = at::empty({nnz}, int_opts);
  auto occ_bag = at::empty({nnz}, int_opts);
  auto bad = at::full({3}, -1, long_opts);
  int32_t* inv = inverse.data_ptr<int32_t>();
  int32_t* ob = occ_bag.data_ptr<int32_t>();
  int64_t capacity = 16;
  while (capacity < 2 * nnz) capacity <<= 1;
  std::vector<int64_t> table_keys(capacity, -1);
  std::vector<int32_t> table_ids(capacity, -1);
  std::vector<int64_t> unique_keys;
  unique_keys.reserve(nnz / 2 + 1);
  for (int64_t bag = 0; bag < num_bags; ++bag) {
    const int64_t f = bag / batch_size;
    const int32_t t = ft[f];
    for (int64_t i = o[bag]; i < o[bag + 1]; ++i) {
      const int64_t id = static_cast<int64_t>(v[i]);
      ob[i] = static_cast<int32_t>(bag);
      if (id < 0 || id >= rows[t]) {
        auto* bp = bad.data_ptr<int64_t>();
        bp[0] = i;
        bp[1] = id;
        bp[2] = f;
        return {at::empty({0}, long_opts), inverse, at::empty({0}, long_opts), at::empty({0}, int_opts),
                occ_bag, bad};
      }
      const int64_t key = pack_row_key(t, id);
      int64_t pos = static_cast<int64_t>(mix64(static_cast<uint64_t>(key)) & (capacity - 1));
      while (true) {
        if (table_keys[pos] == key) {
          inv[i] = table_ids[pos];
          break;
        }
        if (table_keys[pos] < 0) {
          table_keys[pos] = key;
          table_ids[pos] = static_cast<int32_t>(unique_keys.size());
          inv[i] = table_ids[pos];
          unique_keys.push_back(key);
          break;
        }
        pos = (pos + 1) & (capacity - 1);
      }
    }
  }
  const int64_t num_unique = static_cast<int64_t>(unique_keys.size());
  auto row_keys = at::empty({num_unique}, long_opts);
  std::copy(unique_keys.begin(), unique_keys.end(), row_keys.data_ptr<int64_t>());
  auto unique_offsets = at::zeros({num_unique + 1}, long_opts);
  int64_t* uo = unique_offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < nnz; ++i) uo[inv[i] + 1] += 1;
  for (int64_t u = 0; u < num_unique; ++u) uo[u + 1] += uo[u];
  auto unique_occ = at::empty({nnz}, int_opts);
  int32_t* uocc = unique_occ.data_ptr<int32_t>();
  std::vector<int64_t> cursor(uo, uo + num_unique);
  for (int64_t i = 0; i < nnz; ++i) uocc[cursor[inv[i]]++] = static_cast<int32_t>(i);
  return {row_keys, inverse, unique_offsets, unique_occ, occ_bag, bad};
}

UniqueResult unique_cpu(const UniqueCall& call) {
  check_offsets_facts(kUniqueOp, "offsets", offsets_facts(call.offsets), call.values.numel(), false, "values", "bag");
  check_feature_table(kUniqueOp, call.feature_table, call.table_rows.numel());
  UniqueResult result;
  AT_DISPATCH_INDEX_TYPES(call.values.scalar_type(), "unique_cpu", [&] {
    result = unique_impl<index_t>(call.values, call.offsets, call.feature_table, call.table_rows, call.batch_size);
  });
  return result;
}

template <typename weight_t>
at::Tensor forward_impl(const ForwardCall& in) {
  const int64_t batch_size = in.batch_size, out_dim = in.out_dim;
  const int64_t num_features = in.feature_table.numel();
  const int64_t c = in.pool.size(1);
  const int64_t max_chunks = in.slots.size(1);
  auto out = at::zeros({batch_size, out_dim}, in.pool.options().dtype(at::kFloat));
  const weight_t* pp = in.pool.data_ptr<weight_t>();
  const float* scp = data_or_null<float>(in.pool_scale);  // int8 pools: one scale per slot
  const float* wp = data_or_null<float>(in.weights);
  const int32_t *sp = in.slots.data_ptr<int32_t>(), *ip = in.inverse.data_ptr<int32_t>();
  const int32_t *ftp = in.feature_table.data_ptr<int32_t>(), *tcp = in.table_chunks.data_ptr<int32_t>();
  const int64_t *op = in.offsets.data_ptr<int64_t>(), *fcp = in.feature_cols.data_ptr<int64_t>();
  float* outp = out.data_ptr<float>();
  at::parallel_for(0, num_features * batch_size, 64, [&](int64_t begin, int64_t end) {
    for (int64_t bag = begin; bag < end; ++bag) {
      const int64_t f = bag / batch_size;
      const int64_t b = bag % batch_size;
      const int64_t chunks = tcp[ftp[f]];
      float* dst = outp + b * out_dim + fcp[f];
      const int64_t start = op[bag], stop = op[bag + 1];
      for (int64_t i = start; i < stop; ++i) {
        const float wi = wp ? wp[i] : 1.0f;
        const int32_t* row_slots = sp + static_cast<int64_t>(ip[i]) * max_chunks;
        for (int64_t k = 0; k < chunks; ++k) {
          const int32_t s = row_slots[k];
          if (s < 0) break;
          const weight_t* src = pp + static_cast<int64_t>(s) * c;
          const float* scale = scp ? scp + s : nullptr;
          float* d = dst + k * c;
          for (int64_t j = 0; j < c; ++j) d[j] += wi * PoolCodec<weight_t>::load(src, scale, j);
        }
      }
      if (in.pooling_mode == kPoolingMean && stop > start) {
        const float inv_len = 1.0f / static_cast<float>(stop - start);
        for (int64_t j = 0; j < chunks * c; ++j) dst[j] *= inv_len;
      }
    }
  });
  return out;
}

at::Tensor forward_cpu(const ForwardCall& in) {
  if (in.pool.scalar_type() == at::kBFloat16) return forward_impl<at::BFloat16>(in);
  if (in.pool.scalar_type() == at::kChar) return forward_impl<int8_t>(in);
  return forward_impl<float>(in);
}

template <typename weight_t>
std::tuple<at::Tensor, at::Tensor> backward_impl(const BackwardCall& in, at::Tensor& pool, at::Tensor& optim_state,
                                                 at::Tensor& slot_utility) {
  const int64_t batch_size = in.batch_size, pooling_mode = in.pooling_mode, optimizer = in.optimizer;
  const bool need_weight_grad = in.need_weight_grad;
  const int64_t c = pool.size(1);
  const int64_t num_unique = in.row_keys.numel();
  const int64_t max_chunks = in.slots.size(1);
  const int64_t out_dim = in.grad_out.size(1);
  const auto float_opts = pool.options().dtype(at::kFloat);
  auto candidate = at::zeros({num_unique}, float_opts);
  auto weight_grad = need_weight_grad ? at::zeros({in.unique_occ.numel()}, float_opts) : at::empty({0}, float_opts);
  weight_t* pp = pool.data_ptr<weight_t>();
  // int8 pools: one scale per slot, updated with its chunk
  float* scp = in.pool_scale.defined() ? in.pool_scale.data_ptr<float>() : nullptr;
  const int64_t seed = in.rounding_seed;
  float* stp = optimizer == kOptimSgd ? nullptr : optim_state.data_ptr<float>();
  float* up = slot_utility.data_ptr<float>();
  const BackwardArrays x(in);
  float* cp = candidate.data_ptr<float>();
  float* wgp = need_weight_grad ? weight_grad.data_ptr<float>() : nullptr;
  const float flr = static_cast<float>(in.lr), feps = static_cast<float>(in.eps);
  at::parallel_for(0, num_unique, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> grad(max_chunks * c), score(max_chunks), updated(c);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t chunks = x.table_chunks[key_table(x.row_keys[u])];
      const int32_t* row_slots = x.slots + u * max_chunks;
      int64_t live = 0;
      while (live < chunks && row_slots[live] >= 0) ++live;
      const int64_t first = x.unique_offsets[u], last = x.unique_offsets[u + 1];
      const float count = static_cast<float>(last - first);
      if (wgp) {  // d loss / d w_i = <grad_out slice, unweighted pooled rows>, before the weights move
        for (int64_t q = first; q < last; ++q) {
          const int64_t i = x.unique_occ[q];
          const int64_t bag = x.occ_bag[i];
          const int64_t f = bag / batch_size, b = bag % batch_size;
          float scale = 1.0f;
          if (pooling_mode == kPoolingMean) scale = 1.0f / static_cast<float>(x.offsets[bag + 1] - x.offsets[bag]);
          float acc = 0.0f;
          for (int64_t k = 0; k < live; ++k) {
            const float* gr = x.grad_out + b * out_dim + x.feature_cols[f] + k * c;
            const int64_t s = row_slots[k];
            const weight_t* wr = pp + s * c;
            for (int64_t j = 0; j < c; ++j) acc += gr[j] * PoolCodec<weight_t>::load(wr, scp ? scp + s : nullptr, j);
          }
          wgp[i] = acc * scale;
        }
      }
      const int64_t last_chunk = std::min(live + 1, chunks);
      bool finite = true;  // a NaN / inf anywhere in the row's gradient makes a norm sum non-finite
      for (int64_t k = 0; k < last_chunk; ++k) {  // gradient and norm sum of every live chunk and the next one
        float* gk = grad.data() + k * c;
        std::fill(gk, gk + c, 0.0f);
        float norm_sum = 0.0f;
        for (int64_t q = first; q < last; ++q) {
          const int64_t i = x.unique_occ[q];
          const int64_t bag = x.occ_bag[i];
          const int64_t f = bag / batch_size, b = bag % batch_size;
          float scale = x.weights ? x.weights[i] : 1.0f;
          if (pooling_mode == kPoolingMean) scale /= static_cast<float>(x.offsets[bag + 1] - x.offsets[bag]);
          const float* gr = x.grad_out + b * out_dim + x.feature_cols[f] + k * c;
          float sq = 0.0f;
          for (int64_t j = 0; j < c; ++j) {
            const float v = scale * gr[j];
            gk[j] += v;
            sq += v * v;
          }
          norm_sum += std::sqrt(sq);
        }
        score[k] = utility_score(static_cast<int>(in.utility_rule), count, norm_sum);
        finite = finite && std::isfinite(norm_sum);
      }
      if (!finite) {  // the row keeps its chunks, state and utilities; NaN tells the caller it was skipped
        cp[u] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      if (live < chunks) cp[u] = score[live];  // the first missing chunk: only its would-be utility
      float row_mult = 0.0f;
      if (optimizer == kOptimRowwiseAdagrad && live > 0) {  // one accumulator per row, at its index entry
        float sq = 0.0f;
        for (int64_t j = 0; j < live * c; ++j) sq += grad[j] * grad[j];
        float& acc = stp[x.row_entries[u]];
        acc += sq / static_cast<float>(live * c);
        row_mult = flr / (std::sqrt(acc) + feps);
      }
      for (int64_t k = 0; k < live; ++k) {
        const int64_t s = row_slots[k];
        const float* gk = grad.data() + k * c;
        up[s] += score[k];
        weight_t* wr = pp + s * c;
        float* scale = scp ? scp + s : nullptr;
        for (int64_t j = 0; j < c; ++j) {
          float step;
          if (optimizer == kOptimSgd) {
            step = flr * gk[j];
          } else if (optimizer == kOptimAdagrad) {
            float& st = stp[s * c + j];
            st += gk[j] * gk[j];
            step = flr * gk[j] / (std::sqrt(st) + feps);
          } else {
            step = row_mult * gk[j];
          }
          updated[j] = PoolCodec<weight_t>::load(wr, scale, j) - step;
        }
        PoolCodec<weight_t>::store(wr, scale, updated.data(), c, seed, s);
      }
    }
  });
  return {candidate, weight_grad};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const BackwardCall& in, at::Tensor& pool, at::Tensor& optim_state,
                                                at::Tensor& slot_utility) {
  if (pool.scalar_type() == at::kBFloat16) return backward_impl<at::BFloat16>(in, pool, optim_state, slot_utility);
  if (pool.scalar_type() == at::kChar) return backward_impl<int8_t>(in, pool, optim_state, slot_utility);
  return backward_impl<float>(in, pool, optim_state, slot_utility);
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) { register_chunk_bag<unique_cpu, forward_cpu, backward_cpu>(m); }

}  // namespace emb_opt

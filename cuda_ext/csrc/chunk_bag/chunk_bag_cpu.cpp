// CPU kernels of the chunk-bag op family (contracts in chunk_bag_ops.cpp).
// Determinism: the unique pass is sequential (first-occurrence order); forward is parallel over bags and
// backward over unique rows, each summing its occurrences in a fixed order, and every pool slot belongs to
// exactly one unique row, so the fused optimizer needs no atomics and results do not depend on threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "chunk_bag/chunk_bag_checks.h"
#include "common/checks.h"
#include "common/vhpi_key.h"

namespace emb_opt {
namespace {

void check_offsets(const at::Tensor& offsets, int64_t nnz, int64_t num_bags) {
  EMB_OPT_CHECK_DTYPE(offsets, at::kLong, "chunk_bag: offsets");
  EMB_OPT_CHECK(offsets.numel() == num_bags + 1, "chunk_bag: offsets must have F*B+1 = ", num_bags + 1,
              " entries, got ", offsets.numel());
  const int64_t* o = offsets.data_ptr<int64_t>();
  EMB_OPT_CHECK(o[0] == 0, "chunk_bag: offsets[0] must be 0, got ", o[0]);
  EMB_OPT_CHECK(o[num_bags] <= nnz, "chunk_bag: offsets[-1] = ", o[num_bags], " exceeds the ", nnz, " values");
  for (int64_t i = 0; i < num_bags; ++i) {
    EMB_OPT_CHECK(o[i] <= o[i + 1], "chunk_bag: offsets decrease at bag ", i);
  }
}

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
  const int64_t num_tables = table_rows.numel();
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
    EMB_OPT_CHECK(t >= 0 && t < num_tables, "chunk_bag_unique: feature ", f, " maps to table ", t, " of ",
                num_tables);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> chunk_bag_unique_cpu(
    const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& feature_table,
    const at::Tensor& table_rows, int64_t batch_size) {
  EMB_OPT_CHECK_INDEX_DTYPE(values, "chunk_bag_unique: values");
  EMB_OPT_CHECK_DTYPE(feature_table, at::kInt, "chunk_bag_unique: feature_table");
  EMB_OPT_CHECK_DTYPE(table_rows, at::kLong, "chunk_bag_unique: table_rows");
  EMB_OPT_CHECK(batch_size >= 0, "chunk_bag_unique: batch_size must be >= 0");
  auto v = values.contiguous();
  auto o = offsets.contiguous();
  auto ft = feature_table.contiguous();
  auto tr = table_rows.contiguous();
  check_offsets(o, v.numel(), ft.numel() * batch_size);
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> result;
  AT_DISPATCH_INDEX_TYPES(v.scalar_type(), "chunk_bag_unique_cpu",
                          [&] { result = unique_impl<index_t>(v, o, ft, tr, batch_size); });
  return result;
}

at::Tensor chunk_bag_forward_cpu(const at::Tensor& pool, const at::Tensor& slots, const at::Tensor& inverse,
                                 const at::Tensor& offsets, const std::optional<at::Tensor>& weights,
                                 const at::Tensor& feature_table, const at::Tensor& table_chunks,
                                 const at::Tensor& feature_cols, int64_t batch_size, int64_t out_dim,
                                 int64_t pooling_mode) {
  EMB_OPT_CHECK_DTYPE(pool, at::kFloat, "chunk_bag_forward: pool");
  EMB_OPT_CHECK_DTYPE(slots, at::kInt, "chunk_bag_forward: slots");
  EMB_OPT_CHECK_DTYPE(inverse, at::kInt, "chunk_bag_forward: inverse");
  EMB_OPT_CHECK(pool.dim() == 2 && slots.dim() == 2, "chunk_bag_forward: pool and slots must be 2-D");
  EMB_OPT_CHECK(pooling_mode == 0 || pooling_mode == 1, "chunk_bag_forward: pooling_mode must be 0 or 1");
  auto p = pool.contiguous();
  auto sl = slots.contiguous();
  auto inv = inverse.contiguous();
  auto o = offsets.contiguous();
  auto ft = feature_table.contiguous();
  auto tc = table_chunks.contiguous();
  auto fc = feature_cols.contiguous();
  const int64_t num_features = ft.numel();
  check_offsets(o, inv.numel(), num_features * batch_size);
  at::Tensor w;
  if (weights.has_value() && weights->defined()) {
    w = weights->contiguous();
    EMB_OPT_CHECK_DTYPE(w, at::kFloat, "chunk_bag_forward: weights");
    EMB_OPT_CHECK(w.numel() >= inv.numel(), "chunk_bag_forward: fewer weights than values");
  }
  const int64_t c = p.size(1);
  const int64_t max_chunks = sl.size(1);
  auto out = at::zeros({batch_size, out_dim}, p.options());
  const float* pp = p.data_ptr<float>();
  const int32_t* sp = sl.data_ptr<int32_t>();
  const int32_t* ip = inv.data_ptr<int32_t>();
  const int64_t* op = o.data_ptr<int64_t>();
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  const int32_t* ftp = ft.data_ptr<int32_t>();
  const int32_t* tcp = tc.data_ptr<int32_t>();
  const int64_t* fcp = fc.data_ptr<int64_t>();
  float* outp = out.data_ptr<float>();
  for (int64_t f = 0; f < num_features; ++f) {
    EMB_OPT_CHECK(fcp[f] + tcp[ftp[f]] * c <= out_dim, "chunk_bag_forward: feature ", f, " overflows out_dim");
    EMB_OPT_CHECK(tcp[ftp[f]] <= max_chunks, "chunk_bag_forward: table chunks exceed slots' width");
  }
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
          const float* src = pp + static_cast<int64_t>(s) * c;
          float* d = dst + k * c;
          for (int64_t j = 0; j < c; ++j) d[j] += wi * src[j];
        }
      }
      if (pooling_mode == 1 && stop > start) {
        const float inv_len = 1.0f / static_cast<float>(stop - start);
        for (int64_t j = 0; j < chunks * c; ++j) dst[j] *= inv_len;
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> chunk_bag_backward_update_cpu(
    at::Tensor& pool, at::Tensor& optim_state, at::Tensor& slot_utility, const at::Tensor& grad_out,
    const at::Tensor& slots, const at::Tensor& row_keys, const at::Tensor& unique_offsets,
    const at::Tensor& unique_occ, const at::Tensor& occ_bag, const at::Tensor& offsets,
    const std::optional<at::Tensor>& weights, const at::Tensor& table_chunks, const at::Tensor& feature_cols,
    int64_t batch_size, int64_t pooling_mode, int64_t optimizer, double lr, double eps, int64_t utility_rule,
    bool need_weight_grad, const std::optional<at::Tensor>& row_entries) {
  check_backward_update_args(pool, optim_state, slot_utility, optimizer, utility_rule);
  const int64_t c = pool.size(1);
  const at::Tensor entries = check_optimizer_state(pool, optim_state, optimizer, row_entries, row_keys.numel());
  auto g = grad_out.contiguous().to(at::kFloat);
  auto sl = slots.contiguous();
  auto rk = row_keys.contiguous();
  auto uo = unique_offsets.contiguous();
  auto uocc = unique_occ.contiguous();
  auto ob = occ_bag.contiguous();
  auto o = offsets.contiguous();
  auto tc = table_chunks.contiguous();
  auto fc = feature_cols.contiguous();
  at::Tensor w;
  if (weights.has_value() && weights->defined()) w = weights->contiguous();
  const int64_t num_unique = rk.numel();
  const int64_t max_chunks = sl.size(1);
  const int64_t out_dim = g.size(1);
  auto candidate = at::zeros({num_unique}, pool.options());
  auto weight_grad = need_weight_grad ? at::zeros({uocc.numel()}, pool.options()) : at::empty({0}, pool.options());
  float* pp = pool.data_ptr<float>();
  float* stp = optimizer == 0 ? nullptr : optim_state.data_ptr<float>();
  float* up = slot_utility.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const int32_t* sp = sl.data_ptr<int32_t>();
  const int64_t* rkp = rk.data_ptr<int64_t>();
  const int64_t* uop = uo.data_ptr<int64_t>();
  const int32_t* uoccp = uocc.data_ptr<int32_t>();
  const int32_t* obp = ob.data_ptr<int32_t>();
  const int64_t* op = o.data_ptr<int64_t>();
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  const int32_t* tcp = tc.data_ptr<int32_t>();
  const int64_t* fcp = fc.data_ptr<int64_t>();
  const int32_t* ep = entries.defined() ? entries.data_ptr<int32_t>() : nullptr;
  const int64_t num_entries = optim_state.dim() == 2 ? optim_state.size(0) : 0;
  if (ep) {  // each row holding chunks needs its accumulator: an entry in [0, R)
    for (int64_t u = 0; u < num_unique; ++u) {
      EMB_OPT_CHECK(max_chunks == 0 || sp[u * max_chunks] < 0 || (ep[u] >= 0 && ep[u] < num_entries), "chunk_bag_backward: "
                    "row_entries[", u, "] = ", ep[u], " is outside the ", num_entries, " accumulators of optim_state");
    }
  }
  float* cp = candidate.data_ptr<float>();
  float* wgp = need_weight_grad ? weight_grad.data_ptr<float>() : nullptr;
  const float flr = static_cast<float>(lr), feps = static_cast<float>(eps);
  at::parallel_for(0, num_unique, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> grad(max_chunks * c), score(max_chunks);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t chunks = tcp[key_table(rkp[u])];
      const int32_t* row_slots = sp + u * max_chunks;
      int64_t live = 0;
      while (live < chunks && row_slots[live] >= 0) ++live;
      const int64_t first = uop[u], last = uop[u + 1];
      const float count = static_cast<float>(last - first);
      if (wgp) {  // d loss / d w_i = <grad_out slice, unweighted pooled rows>, before the weights move
        for (int64_t q = first; q < last; ++q) {
          const int64_t i = uoccp[q];
          const int64_t bag = obp[i];
          const int64_t f = bag / batch_size, b = bag % batch_size;
          float scale = 1.0f;
          if (pooling_mode == 1) scale = 1.0f / static_cast<float>(op[bag + 1] - op[bag]);
          float acc = 0.0f;
          for (int64_t k = 0; k < live; ++k) {
            const float* gr = gp + b * out_dim + fcp[f] + k * c;
            const float* wr = pp + static_cast<int64_t>(row_slots[k]) * c;
            for (int64_t j = 0; j < c; ++j) acc += gr[j] * wr[j];
          }
          wgp[i] = acc * scale;
        }
      }
      const int64_t last_chunk = std::min(live + 1, chunks);
      for (int64_t k = 0; k < last_chunk; ++k) {  // gradient and norm sum of every live chunk and the next one
        float* gk = grad.data() + k * c;
        std::fill(gk, gk + c, 0.0f);
        float norm_sum = 0.0f;
        for (int64_t q = first; q < last; ++q) {
          const int64_t i = uoccp[q];
          const int64_t bag = obp[i];
          const int64_t f = bag / batch_size, b = bag % batch_size;
          float scale = wp ? wp[i] : 1.0f;
          if (pooling_mode == 1) scale /= static_cast<float>(op[bag + 1] - op[bag]);
          const float* gr = gp + b * out_dim + fcp[f] + k * c;
          float sq = 0.0f;
          for (int64_t j = 0; j < c; ++j) {
            const float v = scale * gr[j];
            gk[j] += v;
            sq += v * v;
          }
          norm_sum += std::sqrt(sq);
        }
        score[k] = utility_rule == 0 ? count : (utility_rule == 1 ? norm_sum / count : norm_sum);
      }
      if (live < chunks) cp[u] = score[live];  // the first missing chunk: only its would-be utility
      float row_mult = 0.0f;
      if (optimizer == 2 && live > 0) {  // row-wise Adagrad: one accumulator per row, at its index entry
        float sq = 0.0f;
        for (int64_t j = 0; j < live * c; ++j) sq += grad[j] * grad[j];
        float& acc = stp[ep[u]];
        acc += sq / static_cast<float>(live * c);
        row_mult = flr / (std::sqrt(acc) + feps);
      }
      for (int64_t k = 0; k < live; ++k) {
        const int64_t s = row_slots[k];
        const float* gk = grad.data() + k * c;
        up[s] += score[k];
        float* wr = pp + s * c;
        if (optimizer == 0) {
          for (int64_t j = 0; j < c; ++j) wr[j] -= flr * gk[j];
        } else if (optimizer == 1) {
          float* st = stp + s * c;
          for (int64_t j = 0; j < c; ++j) {
            st[j] += gk[j] * gk[j];
            wr[j] -= flr * gk[j] / (std::sqrt(st[j]) + feps);
          }
        } else {
          for (int64_t j = 0; j < c; ++j) wr[j] -= row_mult * gk[j];
        }
      }
    }
  });
  return {candidate, weight_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(emb_opt, CPU, m) {
  m.impl("chunk_bag_unique", &chunk_bag_unique_cpu);
  m.impl("chunk_bag_forward", &chunk_bag_forward_cpu);
  m.impl("chunk_bag_backward_update_", &chunk_bag_backward_update_cpu);
}

}  // namespace emb_opt

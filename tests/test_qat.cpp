// Quantization-aware fine-tuning: the adapter's gradients through an int8 / int4 base (the forward reads
// the quantized weights through the inference kernels, the backward their dequantized values) agree
// between the back ends and with finite differences of the quantized model's loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "lab/train/train_loop.h"
#include "model/backward.h"
#include "model/loader.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_numeric.h"
#include "test_util.h"
#include "train_test_data.h"

namespace glmlab {
namespace {

using test::train_golden_path;

using test::nerr;


TrainBatch golden_pad_batch() {
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  return test::golden_train_batch(g, "pad");
}

std::vector<std::vector<float>> grads(Ops& ops, const Model& m, Adapter& a, const TrainBatch& b) {
  a.zero_grad();
  loss_and_backward(ops, m, a, b, 1.0);
  std::vector<std::vector<float>> g;
  for (auto& p : a.params()) g.push_back(p.grad);
  return g;
}

TEST(FinetuneQat, GradientsThroughAQuantizedBase) {
  const TrainBatch b = golden_pad_batch();
  Model f32 = load_model(train_golden_path("tiny-f32"));
  Adapter a = load_adapter(train_golden_path("lora"), f32.config());
  f32.set_adapter(&a);
  auto ref = make_ref_ops(), cpu = make_ops(Backend::Cpu, /*bf16_activations=*/false);
  const auto g_f32 = grads(*ref, f32, a, b);
  for (const char* dt : {"int8", "int4"}) {
    Model q = load_model(train_golden_path("tiny-f32"), dt);
    q.set_adapter(&a);
    const auto g_ref = grads(*ref, q, a, b), g_cpu = grads(*cpu, q, a, b);
    double fast_vs_ref = 0, vs_f32 = 0;
    for (size_t i = 0; i < g_ref.size(); ++i) {
      fast_vs_ref = std::max(fast_vs_ref, nerr(g_cpu[i], g_ref[i]));
      vs_f32 = std::max(vs_f32, nerr(g_ref[i], g_f32[i]));
    }
    EXPECT_LT(fast_vs_ref, 1e-4) << dt;
    EXPECT_GT(vs_f32, 1e-3) << dt << ": the quantized base must change the gradients";
    // Central differences of the quantized model's loss on the largest entry of each parameter.
    a.zero_grad();
    loss_and_backward(*ref, q, a, b, 1.0);
    for (auto& p : a.params()) {
      size_t k = 0;
      for (size_t i = 0; i < p.grad.size(); ++i)
        if (std::fabs(p.grad[i]) > std::fabs(p.grad[k])) k = i;
      const float h = 1e-2f, v0 = p.value[k];
      p.value[k] = v0 + h;
      const double lp = loss_only(*ref, q, b).loss_sum;
      p.value[k] = v0 - h;
      const double lm = loss_only(*ref, q, b).loss_sum;
      p.value[k] = v0;
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(p.grad[k], fd, 2e-2 * std::fabs(fd) + 1e-3) << dt << " " << p.name;
    }
    std::printf("[ %s ] fast vs reference gradients %.2e; vs the fp32 base %.2e\n", dt, fast_vs_ref, vs_f32);
  }
}



// What QAT buys, on the tiny model: train the same LoRA (all four linears, same init and data) on the
// fp32 base and on the int4 base. QAT's adapter gives the int4 model a lower loss than the
// fp32-trained adapter does (asserted); the distance of the logits to (fp32 base + fp32-trained
// adapter) is printed for docs/FINETUNE.md (it is not what QAT optimizes, and at this scale it is larger).
TEST(FinetuneQat, QatAdapterLowersTheQuantizedModelsLoss) {
  std::vector<lab::TrainSample> samples;
  uint64_t x = 9;
  auto next = [&] { return (x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  for (int i = 0; i < 16; ++i) {
    lab::TrainSample s;
    const int len = 10 + int(next() % 8);
    for (int t = 0; t < len; ++t) {
      s.ids.push_back(1 + int32_t(next() % 64));  // a small alphabet: learnable in a few steps
      s.labels.push_back(t < 3 ? -100 : s.ids.back());
    }
    samples.push_back(s);
  }
  lab::TrainOptions o;
  o.adapter.rank = 8;
  o.adapter.targets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  o.adam.lr = 3e-3;
  o.steps = 30;
  o.warmup = 5;
  o.batch_size = 8;
  o.seed = 1;
  auto ops = make_ops(Backend::Cpu, false);
  auto train_on = [&](Model& m) {
    Adapter a = Adapter::create(m.config(), o.adapter);
    m.set_adapter(&a);
    auto rep = lab::train(*ops, m, a, samples, o);
    m.set_adapter(nullptr);
    std::printf("  trained: loss %.3f -> %.3f\n", rep.losses.front(), rep.losses.back());
    return a;
  };
  Model f32 = load_model(train_golden_path("tiny-f32"));
  Model q4 = load_model(train_golden_path("tiny-f32"), "int4");
  Adapter a_f32 = train_on(f32), a_qat = train_on(q4);
  lab::BatchStream stream(samples, 16, false, 0, 0);
  const TrainBatch b = stream.batch(0);
  auto logits = [&](Model& m, const Adapter* a) {
    m.set_adapter(a);
    KVCache cache(m.config(), b.in.B, b.in.T);
    std::vector<float> lg;
    m.forward(*ops, b.in, cache, Logits::All, lg);
    m.set_adapter(nullptr);
    return lg;
  };
  const auto want = logits(f32, &a_f32);
  const size_t V = want.size() / b.in.valid.size();
  // Mean over real positions of the KL divergence KL(p_ref ‖ p) of the next-token distributions, and
  // the rms of the (per-row centred) logits differences.
  auto compare = [&](const std::vector<float>& v, double& kl, double& rms) {
    kl = rms = 0;
    size_t rows = 0;
    for (size_t r = 0; r < b.in.valid.size(); ++r) {
      if (!b.in.valid[r]) continue;
      const float* a = want.data() + r * V;
      const float* c = v.data() + r * V;
      double ma = -1e30, mc = -1e30, sa = 0, sc = 0, mean_d = 0;
      for (size_t k = 0; k < V; ++k) ma = std::max(ma, double(a[k])), mc = std::max(mc, double(c[k]));
      for (size_t k = 0; k < V; ++k) sa += std::exp(a[k] - ma), sc += std::exp(c[k] - mc), mean_d += c[k] - a[k];
      mean_d /= double(V);
      for (size_t k = 0; k < V; ++k) {
        const double la = a[k] - ma - std::log(sa), lc = c[k] - mc - std::log(sc);
        kl += std::exp(la) * (la - lc);
        const double d = c[k] - a[k] - mean_d;
        rms += d * d;
      }
      ++rows;
    }
    kl /= double(rows);
    rms = std::sqrt(rms / double(rows * V));
  };
  double kl_plain, rms_plain, kl_qat, rms_qat, kl_base, rms_base;
  compare(logits(q4, &a_f32), kl_plain, rms_plain);
  compare(logits(q4, &a_qat), kl_qat, rms_qat);
  compare(logits(q4, nullptr), kl_base, rms_base);
  std::printf("  vs (fp32 base + fp32-trained adapter): int4 base + that adapter KL %.4f rms %.4f | int4 base + QAT "
              "adapter KL %.4f rms %.4f | int4 base alone KL %.4f rms %.4f\n",
              kl_plain, rms_plain, kl_qat, rms_qat, kl_base, rms_base);
  // What QAT optimizes: the task loss of the quantized model.
  auto loss_with = [&](Model& m, const Adapter* a) {
    m.set_adapter(a);
    double l = loss_only(*ops, m, b).mean();
    m.set_adapter(nullptr);
    return l;
  };
  const double l_ref = loss_with(f32, &a_f32), l_plain = loss_with(q4, &a_f32), l_qat = loss_with(q4, &a_qat);
  std::printf("  loss on the samples: fp32 base + fp32 adapter %.4f | int4 base + fp32 adapter %.4f | int4 base + "
              "QAT adapter %.4f\n", l_ref, l_plain, l_qat);
  RecordProperty("kl_plain", std::to_string(kl_plain));
  RecordProperty("kl_qat", std::to_string(kl_qat));
  const double plain = l_plain, qat = l_qat;
  EXPECT_LT(qat, plain);
}

}  // namespace
}  // namespace glmlab

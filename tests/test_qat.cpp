// Quantization-aware fine-tuning: the adapter's gradients through an int8 / int4 base (the forward reads
// the quantized weights through the inference kernels, the backward their dequantized values) agree
// between the back ends and with finite differences of the quantized model's loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/backward.h"
#include "model/loader.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace glmlab {
namespace {

std::string train_path(const std::string& rel) { return test::golden_path("train/" + rel); }

TrainBatch golden_pad_batch() {
  SafetensorsFile g(train_path("lora/golden.safetensors"));
  auto read = [&](const std::string& n, std::vector<int64_t>* shape = nullptr) {
    auto& t = g.tensors().at("pad." + n);
    if (shape) *shape = t.shape;
    std::vector<int64_t> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * 8);
    return v;
  };
  std::vector<int64_t> shape;
  auto ids = read("input_ids", &shape), pos = read("position_ids"), mask = read("attention_mask"),
       labels = read("labels");
  TrainBatch b;
  b.in.B = int(shape[0]);
  b.in.T = int(shape[1]);
  for (size_t i = 0; i < ids.size(); ++i) {
    b.in.ids.push_back(int32_t(ids[i]));
    b.in.pos.push_back(int32_t(pos[i]));
    b.in.valid.push_back(uint8_t(mask[i]));
    b.labels.push_back(int32_t(labels[i]));
  }
  return b;
}

double nerr(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, r = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, double(std::fabs(a[i] - b[i])));
    r = std::max(r, double(std::fabs(b[i])));
  }
  return m / r;
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
  Model f32 = load_model(train_path("tiny-f32"));
  Adapter a = load_adapter(train_path("lora"), f32.config());
  f32.set_adapter(&a);
  auto ref = make_ref_ops(), cpu = make_ops(Backend::Cpu, /*bf16_activations=*/false);
  const auto g_f32 = grads(*ref, f32, a, b);
  for (const char* dt : {"int8", "int4"}) {
    Model q = load_model(train_path("tiny-f32"), dt);
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

}  // namespace
}  // namespace glmlab

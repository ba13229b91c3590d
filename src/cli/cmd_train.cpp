// glmlab train: LoRA / VeRA fine-tuning on AdvertiseGen JSON lines (src/lab/train_loop.h), with a
// progress line (loss, lr, samples/s), checkpoints in PEFT's format and --resume.
#include <cmath>
#include <cstdio>
#include <fmt/ranges.h>

#include <limits>
#include <optional>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_setup.h"
#include "dist/comm.h"
#include "lab/train/train_loop.h"
#include "model/peft_io.h"
#include "util/error.h"

namespace glmlab::cli {
namespace {

// Upper bounds of -b and --grad-accum: 2^31 would draw that many samples per micro-batch before any
// memory check could see the batch.
constexpr int kMaxBatchSize = 1 << 16, kMaxGradAccum = 1 << 16;

struct TrainArgs {
  ModelArgs m;
  std::vector<std::string> data;
  std::string method = "lora";
  AdapterArgs adapter;
  lab::TrainOptions t;
  lab::SampleLimits limits;
  bool skip_bad = false;
  std::string init;     // an adapter folder to start from instead of a fresh one
  std::string qat;      // int8 | int4: train on the quantized base
  int bucket_kb = 1024;
};

RegisterCommand register_train([](CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->t.adam.lr = 5e-5;  // the recipe's (finetune_demo configs/lora.yaml)
  auto* cmd = app.add_subcommand("train", "fine-tune a LoRA or VeRA adapter (PEFT format) on AdvertiseGen data");
  add_model_options(cmd, a->m);
  cmd->add_option("--data", a->data, "AdvertiseGen JSON-lines file(s) ({\"content\", \"summary\"} per line)")
      ->required();
  cmd->add_option("--method", a->method, "lora or vera")->capture_default_str();
  cmd->add_option("--out", a->t.out, "folder for the adapter (PEFT files) and the resumable state");
  cmd->add_flag("--resume", a->t.resume, "continue the run saved in --out (same options)");
  cmd->add_option("--qat", a->qat,
                  "quantization-aware: train on the int8 / int4 quantized base (forward and backward read the "
                  "quantized weights), for an adapter that ships with that quantized model")
      ->check(CLI::IsMember({"int8", "int4"}));
  cmd->add_option("--init", a->init, "start from this adapter folder instead of a fresh adapter");
  add_adapter_options(cmd, a->adapter);
  constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
  cmd->add_option("--steps", a->t.steps, "optimizer steps")->check(IntIn(1, kI64Max))->capture_default_str();
  cmd->add_option("--batch-size,-b", a->t.batch_size, "samples per micro-batch (per rank under mpirun)")
      ->check(IntIn(1, kMaxBatchSize))
      ->capture_default_str();
  cmd->add_option("--grad-accum", a->t.grad_accum, "micro-batches per optimizer step")
      ->check(IntIn(1, kMaxGradAccum))
      ->capture_default_str();
  cmd->add_option("--lr", a->t.adam.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--warmup", a->t.warmup, "warm-up steps (then linear decay to 0)")
      ->check(IntIn(0, kI64Max))
      ->capture_default_str();
  cmd->add_option("--weight-decay", a->t.adam.weight_decay)->capture_default_str();
  cmd->add_option("--max-grad-norm", a->t.max_grad_norm, "gradient clipping (0 = off)")->capture_default_str();
  cmd->add_flag("--pack", a->t.pack, "pack the samples of a batch into rows (block-diagonal causal mask)");
  cmd->add_option("--pack-length", a->t.pack_length, "packed row length (default: the longest sample)")
      ->check(IntAtLeast(0));
  cmd->add_option("--train-seed", a->t.seed, "seed of data order, dropout and adapter init")
      ->check(UintIn())
      ->capture_default_str();
  cmd->add_option("--save-every", a->t.save_every, "checkpoint every N steps (0 = at the end only)")
      ->capture_default_str();
  cmd->add_option("--stop-after", a->t.stop_after, "stop after this many steps, as if interrupted (for tests)");
  cmd->add_option("--max-input", a->limits.max_input, "recipe limit of input tokens")->capture_default_str();
  cmd->add_option("--max-output", a->limits.max_output, "recipe limit of output tokens")->capture_default_str();
  cmd->add_flag("--truncate", a->limits.truncate, "cut longer samples to max input + max output + 1 (the recipe)");
  cmd->add_flag("--skip-bad", a->skip_bad, "skip bad records instead of failing");
  cmd->add_option("--grad-bucket-kb", a->bucket_kb,
                  "data parallelism (mpirun -np N): gradients are all-reduced in buckets of this many KiB while the "
                  "backward runs")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->callback([a] {
    // Under mpirun / srun every rank runs this; rank 0 alone prints and writes (docs/DISTRIBUTED.md).
    dist::Communicator& comm = dist::world();
    const bool lead = comm.rank() == 0;
    if (!a->qat.empty()) {
      if (!a->m.dtype.empty() && a->m.dtype != a->qat)
        fail("--qat {} trains on the {} base; it conflicts with --dtype {}", a->qat, a->qat, a->m.dtype);
      a->m.dtype = a->qat;
    }
    if (!a->m.adapter.empty()) fail("train: use --init DIR to start from an adapter (--adapter is for inference)");
    // Every rank loads the same base and reads the same records; a failure is agreed on, so every rank
    // stops with the same error instead of waiting for the others.
    std::optional<Loaded> loaded;
    std::optional<Tokenizer> tokenizer;
    std::vector<lab::Record> records;
    // --device cuda (or --engine device): the device-resident trainer; the model is read on the host and
    // uploaded by it.
    std::unique_ptr<Device> device;
    dist::agree(comm, [&] {
      ModelArgs host = a->m;
      if (wants_device_engine(a->m)) {
        device = make_device(backend_from_name(a->m.device), !a->m.fp32_activations);  // before a large model is loaded
        host.device = "cpu";
        host.engine = "host";
      }
      loaded.emplace(load(host));
      tokenizer.emplace(load_tokenizer(a->m.tokenizer, a->m.model));
      lab::ReadOptions ro;
      ro.skip_bad = a->skip_bad;
      records = lab::read_records(a->data, ro);
    });
    Loaded& L = *loaded;
    const ModelConfig& c = L.model.config();
    auto samples = train_samples(*tokenizer, records, a->limits, c, &comm);

    AdapterConfig& ac = a->t.adapter;
    std::optional<Adapter> made;
    dist::agree(comm, [&] {
      ac = make_adapter_config(a->method, a->adapter, a->t.seed);
      made.emplace(a->init.empty() ? Adapter::create(c, ac) : load_adapter(a->init, c));
    });
    Adapter& adapter = *made;
    if (!a->init.empty()) a->t.adapter = adapter.config();
    L.model.set_adapter(&adapter);
    // What the adapter is trained on: a resume on another base is refused.
    a->t.base = fmt::format("{} {}{}{}", a->m.model, dtype_name(L.model.weights().dtype),
                            a->qat.empty() ? "" : " qat",
                            a->m.model.rfind("random:", 0) == 0 ? fmt::format(" seed {}", a->m.seed) : "");
    a->t.comm = &comm;
    a->t.bucket_bytes = size_t(a->bucket_kb) * 1024;
    if (comm.size() > 1 && lead)
      std::fprintf(stderr, "glmlab: data parallel over %d ranks (%s): global batch %lld = %d × %d × %d\n", comm.size(),
                   comm.backend().c_str(), (long long)a->t.batch_size * a->t.grad_accum * comm.size(),
                   a->t.batch_size, a->t.grad_accum, comm.size());
    if (lead) std::fprintf(stderr, "glmlab: %s r %d on %s: %lld trainable parameters; %zu samples, %lld steps × %d × %d samples\n",
                 std::string(method_name(ac.method)).c_str(), adapter.config().rank,
                 fmt::format("{}", fmt::join(adapter.config().targets, ",")).c_str(),
                 (long long)adapter.trainable_count(), samples.size(), (long long)a->t.steps, a->t.grad_accum,
                 a->t.batch_size);
    if (device && lead)
      std::fprintf(stderr, "glmlab: training on %s (device trainer: weights, adapter, gradients and AdamW state in "
                   "its memory)\n", std::string(device->name()).c_str());
    auto rep = lab::train(*L.ops, L.model, adapter, samples, a->t, [&](const lab::StepLog& s) {
      if (!lead) return;
      std::fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.3g | grad norm %.3g | %.2f samples/s | %.0f tokens/s   ",
                   (long long)s.step, (long long)a->t.steps, s.loss, s.lr, s.grad_norm,
                   double(s.samples) / s.seconds, double(s.tokens) / s.seconds);
      std::fflush(stderr);
    }, std::move(device));
    if (!lead) {
      if (rep.nan_stop) throw dist::CollectiveError(rep.message);  // every rank stops on the same step
      return;
    }
    std::fprintf(stderr, "\n");
    if (comm.size() > 1 && rep.steps_done > 0)
      std::fprintf(stderr, "glmlab: %d ranks: %.1f KiB of gradients all-reduced per step in %zu buckets; %.3f s of "
                   "%.2f s in exposed communication (%.1f%%)\n",
                   comm.size(), double(rep.grad_bytes) / 1024, rep.grad_buckets, rep.comm_exposed_seconds, rep.seconds,
                   100.0 * rep.comm_exposed_seconds / rep.seconds);
    for (size_t i = size_t(rep.first_step); i < rep.losses.size(); ++i)
      std::printf("step %zu loss %.6f\n", i + 1, rep.losses[i]);
    if (rep.steps_done > 0)
      std::fprintf(stderr,
                   "glmlab: %lld steps in %.2f s: %.2f samples/s, %.0f tokens/s (forward %.2f s, loss %.2f s, backward "
                   "%.2f s, optimizer %.2f s)\n",
                   (long long)rep.steps_done, rep.seconds, double(rep.samples) / rep.seconds,
                   double(rep.tokens) / rep.seconds, rep.times.forward_s, rep.times.head_s, rep.times.backward_s,
                   rep.optimizer_seconds);
    if (!a->t.out.empty() && !rep.nan_stop) std::fprintf(stderr, "glmlab: adapter saved in %s\n", a->t.out.c_str());
    if (rep.nan_stop) throw dist::CollectiveError(rep.message);
  });
});

}  // namespace
}  // namespace glmlab::cli

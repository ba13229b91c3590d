// Numerical agreement with a reference runtime: a golden file written by tools/reference (from
// transformers on CPU/CUDA, or the same script on another runtime) holds a left-padded batch, the
// logits of every prefill position and of a few cached decode steps. glmlab runs the same tokens and
// reports the error per position and top-1 agreement.
#pragma once
#include <string>
#include <vector>

#include "model/engine.h"
#include "model/model.h"

namespace glmlab {

struct ParityRow {
  std::string phase;  // "prefill" or "stepK"
  int batch = 0, pos = 0;
  double max_abs = 0, max_ref = 0, rel = 0;  // rel = max_abs / max|ref| of the row
  bool top1 = true;
};

struct ParityReport {
  std::vector<ParityRow> rows;
  double max_abs = 0, max_rel = 0, top1_rate = 1;
  bool pass = false;
};

struct ParityOptions {
  double atol = 1e-4;        // a row passes when max_abs <= atol + rtol · max|ref|
  double rtol = 1e-4;
  double min_top1 = 1.0;     // fraction of rows whose argmax must agree
  // Which golden logits: "" = the reference runtime in the checkpoint's dtype; "_fp32ref" = the
  // reference computing in fp32 on the same (rounded) weights, as glmlab's CPU back end does.
  std::string suffix;
};

// Runs the golden file's batch on `engine` (reset to its batch and prompt + steps tokens).
ParityReport run_parity(Engine& engine, const std::string& golden_path, const ParityOptions& opt);
// The same on a HostEngine(model, ops).
ParityReport run_parity(const Model& model, Ops& ops, const std::string& golden_path, const ParityOptions& opt);

// The batch, prompt length and decode steps of a golden file (to size a device engine).
struct GoldenShape {
  int B = 0, T = 0, steps = 0;
};
GoldenShape golden_shape(const std::string& golden_path);
std::string parity_table(const ParityReport& r, bool all_rows);

}  // namespace glmlab

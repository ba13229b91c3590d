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
  double ref_margin = 0;  // the reference's top-1 logit minus its second (how near a tie the row is)
  // A near-tie: the reference's two best logits are closer than the row's own error could move them
  // apart (each by max_abs), so a different argmax there is explained by an error the bound allows.
  bool near_tie() const { return ref_margin <= 2 * max_abs; }
};

struct ParityReport {
  std::vector<ParityRow> rows;
  double max_abs = 0, max_rel = 0, top1_rate = 1;
  bool pass = false;
};

struct ParityOptions {
  double atol = 1e-4;        // a row passes when max_abs <= atol + rtol · max|ref|
  double rtol = 1e-4;
  double min_top1 = 1.0;     // fraction of rows whose argmax must agree (a near-tie row counts as agreeing)
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

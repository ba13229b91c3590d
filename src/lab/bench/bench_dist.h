// Data-parallel inference benchmark (mpirun -np N glmlab bench infer): the records are shared out over
// the ranks, each rank runs its share on its own engine, rank 0 gathers every rank's records and
// groups and writes one report.
//
// Sharing: prompts sorted by (target length, prompt length) are dealt round-robin, so every rank gets
// the same mix of short and long work (static batching then groups similar lengths on each rank).
// Aggregation per run (dtype, batch) and repetition: output tokens of all ranks ÷ the slowest rank's
// wall time (the ranks start together after rank 0's probes); the per-group figures (prefill and decode
// rates, latencies, TTFT) are each rank's own, pooled. Every record appears exactly once per repetition.
#pragma once
#include <vector>

#include "dist/comm.h"
#include "lab/bench/bench_infer.h"

namespace glmlab::lab {

// This rank's share of the prompts (their `index` stays the global record number).
std::vector<BenchPrompt> shard_prompts(const std::vector<BenchPrompt>& all, int rank, int size);

// Collective. On rank 0, `rep` becomes the report of the whole job (all_prompts as its prompts); on
// the other ranks it is left as it is. Error on rank 0 if a record is missing or repeated.
void gather_bench_infer(dist::Communicator& comm, BenchReport& rep, const std::vector<BenchPrompt>& all_prompts);

}  // namespace glmlab::lab

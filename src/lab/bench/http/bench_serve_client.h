// glmlab bench serve's HTTP side (cpp-httplib; compiled into glmlab_http so that glmlab_core never
// includes httplib): the requests themselves, timed as their server-sent events arrive, the runs
// (concurrency levels, then Poisson rates) and the server's /v1/models and /metrics.
//
// Closed loop (concurrency c): c client threads, each with its own keep-alive connection, take the next
// record when their previous reply has ended. Open loop (rate r): min(max_concurrency, records) threads
// take the records in order and send each at its Poisson arrival time; when all of them are busy a later
// arrival waits for a free one (its start_s is then after its scheduled_s).
// Before each run, `warmup` requests (the first records) are sent and discarded; glmlab's /metrics is read
// after the warm-up and, once the server is idle again, after the last repetition.
#pragma once
#include <string>
#include <vector>

#include "lab/bench/bench_serve.h"

namespace glmlab::lab {

// Runs every level. Fails at once (an Error naming the URL) when the server cannot be reached; HTTP
// errors, time-outs and bad replies of single requests are recorded in the report instead.
BenchServeReport run_bench_serve(const std::vector<ServePrompt>& prompts, const BenchServeOptions& o);

}  // namespace glmlab::lab

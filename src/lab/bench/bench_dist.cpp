// Sharing out and gathering a data-parallel inference benchmark (see bench_dist.h).
#include "lab/bench/bench_dist.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <tuple>

#include "lab/bench/bench_summary.h"
#include "util/error.h"

namespace glmlab::lab {

using nlohmann::json;

std::vector<BenchPrompt> shard_prompts(const std::vector<BenchPrompt>& all, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) fail("bench: rank {} of a world of {}", rank, size);
  std::vector<size_t> order(all.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_tuple(all[a].target_tokens, all[a].input.size(), all[a].index) <
           std::make_tuple(all[b].target_tokens, all[b].input.size(), all[b].index);
  });
  std::vector<BenchPrompt> mine;
  for (size_t k = size_t(rank); k < order.size(); k += size_t(size)) mine.push_back(all[order[k]]);
  std::sort(mine.begin(), mine.end(), [](const BenchPrompt& a, const BenchPrompt& b) { return a.index < b.index; });
  return mine;
}

namespace {

json record_to_json(const RecordResult& x) {
  return {{"dtype", x.dtype},   {"schedule", x.schedule}, {"batch", x.batch},       {"rep", x.rep},
          {"group", x.group},   {"index", x.index},       {"input_tokens", x.input_tokens},
          {"target", x.target_tokens}, {"output_tokens", x.output_tokens}, {"forced", x.forced},
          {"stopped", x.stopped}, {"prefill_s", x.prefill_s}, {"decode_s", x.decode_s},
          {"total_s", x.total_s}, {"ids", x.output_ids}};
}
RecordResult record_from_json(const json& j) {
  RecordResult x;
  x.dtype = j.at("dtype").get<std::string>();
  x.schedule = j.at("schedule").get<std::string>();
  x.batch = j.at("batch").get<int>();
  x.rep = j.at("rep").get<int>();
  x.group = j.at("group").get<int>();
  x.index = j.at("index").get<size_t>();
  x.input_tokens = j.at("input_tokens").get<int32_t>();
  x.target_tokens = j.at("target").get<int32_t>();
  x.output_tokens = j.at("output_tokens").get<int32_t>();
  x.forced = j.at("forced").get<bool>();
  x.stopped = j.at("stopped").get<bool>();
  x.prefill_s = j.at("prefill_s").get<double>();
  x.decode_s = j.at("decode_s").get<double>();
  x.total_s = j.at("total_s").get<double>();
  x.output_ids = j.at("ids").get<std::vector<int32_t>>();
  return x;
}
json group_to_json(const GroupResult& g) {
  return {{"dtype", g.dtype}, {"schedule", g.schedule}, {"decode_tokens", g.decode_tokens}, {"batch", g.batch}, {"rep", g.rep}, {"group", g.group}, {"sequences", g.sequences},
          {"input_tokens", g.input_tokens}, {"output_tokens", g.output_tokens}, {"decode_steps", g.decode_steps},
          {"prefill_s", g.prefill_s}, {"decode_s", g.decode_s}, {"wall_s", g.wall_s},
          {"prefill_flops", g.prefill_flops}};
}
GroupResult group_from_json(const json& j) {
  GroupResult g;
  g.dtype = j.at("dtype").get<std::string>();
  g.schedule = j.at("schedule").get<std::string>();
  g.decode_tokens = j.at("decode_tokens").get<int64_t>();
  g.batch = j.at("batch").get<int>();
  g.rep = j.at("rep").get<int>();
  g.group = j.at("group").get<int>();
  g.sequences = j.at("sequences").get<int>();
  g.input_tokens = j.at("input_tokens").get<int64_t>();
  g.output_tokens = j.at("output_tokens").get<int64_t>();
  g.decode_steps = j.at("decode_steps").get<int64_t>();
  g.prefill_s = j.at("prefill_s").get<double>();
  g.decode_s = j.at("decode_s").get<double>();
  g.wall_s = j.at("wall_s").get<double>();
  g.prefill_flops = j.at("prefill_flops").get<double>();
  return g;
}

}  // namespace

void gather_bench_infer(dist::Communicator& comm, BenchReport& rep, const std::vector<BenchPrompt>& all_prompts) {
  if (comm.size() == 1) return;
  json mine = {{"host", comm.host()}, {"records", json::array()}, {"groups", json::array()}};
  for (const auto& r : rep.records) mine["records"].push_back(record_to_json(r));
  for (const auto& g : rep.groups) mine["groups"].push_back(group_to_json(g));
  auto parts = comm.all_gather(mine.dump());
  if (comm.rank() != 0) return;

  std::vector<RecordResult> records;
  std::vector<std::pair<int, GroupResult>> groups;  // (rank, group)
  std::vector<std::string> hosts;
  for (int r = 0; r < int(parts.size()); ++r) {
    json j = json::parse(parts[size_t(r)]);
    hosts.push_back(j.at("host").get<std::string>());
    for (const auto& x : j.at("records")) records.push_back(record_from_json(x));
    for (const auto& g : j.at("groups")) groups.emplace_back(r, group_from_json(g));
  }
  DistInfo info;
  info.ranks = comm.size();
  info.backend = comm.backend();
  std::vector<RecordResult> all_records;
  std::vector<GroupResult> all_groups;
  for (RunSummary& s : rep.runs) {
    const int reps = std::max(1, s.reps);
    auto same = [&](const std::string& d, const std::string& sch, int b) {
      return d == s.dtype && sch == s.schedule && b == s.batch;
    };
    std::vector<RecordResult> rs;
    for (const auto& x : records)
      if (same(x.dtype, x.schedule, x.batch)) rs.push_back(x);
    std::stable_sort(rs.begin(), rs.end(), [](const RecordResult& a, const RecordResult& b) {
      return a.rep != b.rep ? a.rep < b.rep : a.index < b.index;
    });
    // Every record exactly once per repetition.
    for (int r = 0; r < reps; ++r) {
      std::set<size_t> seen;
      for (const auto& x : rs)
        if (x.rep == r && !seen.insert(x.index).second)
          fail("bench: record {} ran twice in repetition {} of {} batch {}", x.index, r, s.dtype, s.batch);
      if (seen.size() != all_prompts.size())
        fail("bench: {} of {} records ran in repetition {} of {} batch {}", seen.size(), all_prompts.size(), r, s.dtype,
             s.batch);
    }
    std::vector<GroupResult> gs;
    std::vector<std::vector<double>> rank_wall(size_t(comm.size()), std::vector<double>(size_t(reps), 0.0));
    std::vector<int64_t> rep_tokens(size_t(reps), 0);
    std::vector<int64_t> rank_in(size_t(comm.size()), 0), rank_out(size_t(comm.size()), 0);
    std::vector<size_t> rank_records(size_t(comm.size()), 0);
    for (const auto& [rank, g] : groups) {
      if (!same(g.dtype, g.schedule, g.batch)) continue;
      gs.push_back(g);
      if (g.rep < 0 || g.rep >= reps) fail("bench: rank {} sent repetition {} of {}", rank, g.rep, reps);
      rank_wall[size_t(rank)][size_t(g.rep)] += g.wall_s;
      rep_tokens[size_t(g.rep)] += g.output_tokens;
      if (g.rep == 0) {
        rank_in[size_t(rank)] += g.input_tokens;
        rank_out[size_t(rank)] += g.output_tokens;
        rank_records[size_t(rank)] += size_t(g.sequences);
      }
    }
    // The pooled per-group figures, then the aggregate wall and throughput.
    RunSummary agg = summarize_run(gs, rs, s.facts, s.batch, reps, rep.probed ? s.decode_limit_gbs : 0,
                                   rep.probed && !rep.device_probe ? s.prefill_limit_gflops : 0);
    agg.prefill_limit = s.prefill_limit;
    agg.prefill_limit_gflops = s.prefill_limit_gflops;
    agg.decode_limit = s.decode_limit;
    agg.decode_limit_gbs = s.decode_limit_gbs;
    std::vector<double> wall, tps;
    for (int r = 0; r < reps; ++r) {
      double w = 0;
      for (const auto& rw : rank_wall) w = std::max(w, rw[size_t(r)]);
      wall.push_back(w);
      tps.push_back(w > 0 ? double(rep_tokens[size_t(r)]) / w : 0);
    }
    agg.wall_s = spread_of(wall);
    agg.throughput_tps = spread_of(tps);
    agg.dtype = s.dtype;
    agg.schedule = s.schedule;
    s = std::move(agg);
    for (int r = 0; r < comm.size(); ++r) {
      RankRun x;
      x.rank = r;
      x.host = hosts[size_t(r)];
      x.dtype = s.dtype;
      x.batch = s.batch;
      x.records = rank_records[size_t(r)];
      x.input_tokens = rank_in[size_t(r)];
      x.output_tokens = rank_out[size_t(r)];
      x.wall_s = spread_of(rank_wall[size_t(r)]).median;
      x.tokens_per_s = x.wall_s > 0 ? double(x.output_tokens) / x.wall_s : 0;
      info.per_rank.push_back(x);
    }
    all_records.insert(all_records.end(), rs.begin(), rs.end());
    all_groups.insert(all_groups.end(), gs.begin(), gs.end());
  }
  set_batch_gains(rep.runs);
  rep.records = std::move(all_records);
  rep.groups = std::move(all_groups);
  rep.prompts = all_prompts;
  rep.dist = std::move(info);
}

}  // namespace glmlab::lab

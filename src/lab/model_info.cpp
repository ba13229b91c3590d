#include "lab/model_info.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace glmlab {

std::vector<LinearShape> linear_shapes(const ModelConfig& c) {
  return {{"query_key_value", c.hidden_size, c.qkv_dim()},
          {"dense", c.q_dim(), c.hidden_size},
          {"dense_h_to_4h", c.hidden_size, 2 * int64_t(c.ffn_hidden_size)},
          {"dense_4h_to_h", c.ffn_hidden_size, c.hidden_size}};
}

const LinearShape& linear_shape(const ModelConfig& c, const std::string& target) {
  static thread_local std::vector<LinearShape> shapes;
  shapes = linear_shapes(c);
  for (auto& s : shapes)
    if (s.name == target) return s;
  fail("unknown target module \"{}\" (expected query_key_value, dense, dense_h_to_4h or dense_4h_to_h)", target);
}

int64_t lora_params(const ModelConfig& c, int rank, const std::vector<std::string>& targets) {
  if (rank <= 0) fail("LoRA rank must be positive, got {}", rank);
  int64_t n = 0;
  for (auto& t : targets) {
    auto& s = linear_shape(c, t);
    n += int64_t(rank) * (s.in + s.out);
  }
  return n * c.num_layers;
}

int64_t vera_params(const ModelConfig& c, int rank, const std::vector<std::string>& targets) {
  if (rank <= 0) fail("VeRA rank must be positive, got {}", rank);
  int64_t n = 0;
  for (auto& t : targets) n += linear_shape(c, t).out + rank;
  return n * c.num_layers;
}

std::string group_digits(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) r += ',';
    r += s[i];
  }
  return v < 0 ? "-" + r : r;
}

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string r;
  for (auto& s : v) r += (r.empty() ? "" : ",") + s;
  return r;
}
}  // namespace

std::string info_text(const ModelConfig& c, const InfoOptions& o) {
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  const int64_t emb = V * C, layer = c.layer_params(), layers = layer * c.num_layers;
  std::string s;
  auto line = [&](const std::string& l) { s += l + "\n"; };
  line(fmt::format("ChatGLM3 model: {}", c.name));
  line(fmt::format("  layers {}  hidden {}  ffn {}  heads {} × {}  kv groups {}  vocab {}  seq_length {}  rope base {}",
                   c.num_layers, C, F, c.num_heads, c.kv_channels, c.num_groups, V, c.seq_length, c.rope_base()));
  line("");
  line(fmt::format("  input_ids [B, T]"));
  line(fmt::format("      │ word_embeddings [{}, {}]", V, C));
  line(fmt::format("      ▼ x [B, T, {}]", C));
  line(fmt::format("  ┌─ GLMBlock × {} ─────────────────────────────────────────────", c.num_layers));
  line(fmt::format("  │ input_layernorm (RMSNorm [{}], eps {})", C, c.layernorm_eps));
  line(fmt::format("  │ query_key_value [{}, {}] + bias [{}] → Q {} heads × {} | K {} × {} | V {} × {}", c.qkv_dim(), C,
                   c.add_qkv_bias ? c.qkv_dim() : 0, c.num_heads, c.kv_channels, c.num_groups, c.kv_channels,
                   c.num_groups, c.kv_channels));
  line(fmt::format("  │ rotary on dims 0..{} of each head (interleaved pairs), KV cache [L, B, S, {}, {}]",
                   c.rot_dim() - 1, c.num_groups, c.kv_channels));
  line(fmt::format("  │ causal attention, head h reads KV group h / {}, scale 1/√{}", c.num_heads / c.num_groups,
                   c.kv_channels));
  line(fmt::format("  │ dense [{}, {}]  →  x = x + attn", C, c.q_dim()));
  line(fmt::format("  │ post_attention_layernorm (RMSNorm [{}])", C));
  line(fmt::format("  │ dense_h_to_4h [{}, {}] → gate | up;  silu(gate) · up  [{}]", 2 * F, C, F));
  line(fmt::format("  │ dense_4h_to_h [{}, {}]  →  x = x + mlp", C, F));
  line("  └──────────────────────────────────────────────────────────────");
  line(fmt::format("      │ final_layernorm (RMSNorm [{}])", C));
  line(fmt::format("      │ output_layer [{}, {}]", V, C));
  line(fmt::format("      ▼ logits [B, T, {}]", V));
  line("");
  line("Parameters");
  line(fmt::format("  {:<34}{:>16}", "word_embeddings", group_digits(emb)));
  line(fmt::format("  {:<34}{:>16}", fmt::format("encoder layers ({} × {})", c.num_layers, group_digits(layer)),
                   group_digits(layers)));
  for (auto& l : linear_shapes(c))
    line(fmt::format("    {:<32}{:>16}", fmt::format("{} [{}, {}]", l.name, l.out, l.in),
                     group_digits(l.in * l.out * c.num_layers)));
  line(fmt::format("    {:<32}{:>16}", "qkv bias", group_digits(c.add_qkv_bias ? int64_t(c.qkv_dim()) * c.num_layers : 0)));
  line(fmt::format("    {:<32}{:>16}", "layernorms", group_digits(2 * C * c.num_layers)));
  line(fmt::format("  {:<34}{:>16}", "final_layernorm", group_digits(C)));
  line(fmt::format("  {:<34}{:>16}", "output_layer", group_digits(emb)));
  line(fmt::format("  {:<34}{:>16}", "total", group_digits(c.total_params())));
  line("");
  line("Trainable under adapters (base frozen)");
  line(fmt::format("  {:<34}{:>16}", fmt::format("LoRA r={} alpha={} on {}", o.lora_rank, o.lora_alpha, join(o.lora_targets)),
                   group_digits(lora_params(c, o.lora_rank, o.lora_targets))));
  line(fmt::format("  {:<34}{:>16}", fmt::format("VeRA r={} on {}", o.vera_rank, join(o.vera_targets)),
                   group_digits(vera_params(c, o.vera_rank, o.vera_targets))));
  return s;
}

nlohmann::json info_json(const ModelConfig& c, const InfoOptions& o) {
  nlohmann::json comp = nlohmann::json::object();
  comp["word_embeddings"] = int64_t(c.vocab_size) * c.hidden_size;
  comp["encoder_layers"] = c.layer_params() * c.num_layers;
  for (auto& l : linear_shapes(c)) comp[l.name] = l.in * l.out * c.num_layers;
  comp["final_layernorm"] = c.hidden_size;
  comp["output_layer"] = int64_t(c.vocab_size) * c.hidden_size;
  return {{"config", c.to_json()},
          {"name", c.name},
          {"total_params", c.total_params()},
          {"per_layer_params", c.layer_params()},
          {"components", comp},
          {"lora", {{"rank", o.lora_rank}, {"alpha", o.lora_alpha}, {"targets", o.lora_targets},
                    {"trainable_params", lora_params(c, o.lora_rank, o.lora_targets)}}},
          {"vera", {{"rank", o.vera_rank}, {"targets", o.vera_targets},
                    {"trainable_params", vera_params(c, o.vera_rank, o.vera_targets)}}}};
}

std::string info_dot(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  std::string s = "digraph chatglm3 {\n  rankdir=TB; node [shape=box, fontname=\"monospace\"];\n";
  auto node = [&](const char* id, const std::string& label) { s += fmt::format("  {} [label=\"{}\"];\n", id, label); };
  node("ids", "input_ids [B, T]");
  node("emb", fmt::format("word_embeddings [{}, {}]", V, C));
  s += fmt::format("  subgraph cluster_block {{ label=\"GLMBlock × {}\";\n", c.num_layers);
  node("ln1", fmt::format("input_layernorm RMSNorm [{}]", C));
  node("qkv", fmt::format("query_key_value [{}, {}] + bias", c.qkv_dim(), C));
  node("rope", fmt::format("rotary (dims 0..{}, interleaved)", c.rot_dim() - 1));
  node("attn", fmt::format("causal GQA attention {} heads / {} groups", c.num_heads, c.num_groups));
  node("dense", fmt::format("dense [{}, {}] + residual", C, c.q_dim()));
  node("ln2", fmt::format("post_attention_layernorm RMSNorm [{}]", C));
  node("h4h", fmt::format("dense_h_to_4h [{}, {}]", 2 * F, C));
  node("swiglu", fmt::format("silu(gate) · up [{}]", F));
  node("h4", fmt::format("dense_4h_to_h [{}, {}] + residual", C, F));
  s += "  }\n";
  node("lnf", fmt::format("final_layernorm RMSNorm [{}]", C));
  node("out", fmt::format("output_layer [{}, {}]", V, C));
  node("logits", fmt::format("logits [B, T, {}]", V));
  s += "  ids -> emb -> ln1 -> qkv -> rope -> attn -> dense -> ln2 -> h4h -> swiglu -> h4 -> lnf -> out -> logits;\n";
  s += "  h4 -> ln1 [style=dashed, label=\"next layer\"];\n}\n";
  return s;
}

}  // namespace glmlab

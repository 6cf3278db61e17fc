// The attention-part registry on the CPU (jitattn/registry.h): the built-in names, FairSeq's JSON
// configs verbatim (numeric strings), what each built part yields (bias kind, options, variant),
// errors that name the field or list the registered names, and a part registered here. No kernel
// is launched; registry_gpu_test.cpp runs the parts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/registry.h"

namespace jitattn {
namespace {

const CallShape kShape{2, 8, 64, 64};

std::string joined(const Error& e) {
  std::string s;
  for (const auto& r : e.reasons()) s += r + "\n";
  return s;
}

// The Error a config gets (fails the test if it builds).
Error refusal(const std::string& json) {
  try {
    attention_from_config(json);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
    return e;
  }
  ADD_FAILURE() << json << " was accepted";
  return Error("accepted");
}

TEST(Registry, ListsTheBuiltInPartsSorted) {
  const std::vector<std::string> names = registered_attentions();
  for (const char* n : {"alibi", "local", "scaled_dot_product", "variant"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  const std::vector<ConfigField> f = attention_config_fields("local");
  EXPECT_NE(std::find_if(f.begin(), f.end(), [](const ConfigField& x) { return x.name == "window_size"; }), f.end());
}

TEST(Registry, FairSeqScaledDotProductVerbatim) {
  auto part = attention_from_config(R"({"name": "scaled_dot_product"})");
  EXPECT_EQ(part->name(), "scaled_dot_product");
  EXPECT_STREQ(bias_name(part->bias(kShape)), "None");
  EXPECT_EQ(part->options().p, 0.0);
  EXPECT_FALSE(part->options().scale.has_value());
  EXPECT_EQ(part->variant(), nullptr);

  // What FairSeq's MultiheadAttention adds (dropout, num_heads), and xFormers' unused seq_len fields.
  part = attention_from_config(R"({"name": "scaled_dot_product", "dropout": "0.1", "num_heads": "8", "seq_len": "256"})");
  EXPECT_DOUBLE_EQ(part->options().p, 0.1);
  part = attention_from_config(R"({"name": "scaled_dot_product", "causal": true, "dropout": 0.1})");
  EXPECT_STREQ(bias_name(part->bias(kShape)), "LowerTriangularMask");
  EXPECT_DOUBLE_EQ(part->options().p, 0.1);
}

TEST(Registry, NumericAndBoolStringsAsFairSeqPassesThem) {
  auto part = attention_from_config(R"({"name": "scaled_dot_product", "causal": "true", "dropout": "0.1", "scale": "0.125"})");
  EXPECT_STREQ(bias_name(part->bias(kShape)), "LowerTriangularMask");
  EXPECT_DOUBLE_EQ(part->options().p, 0.1);
  ASSERT_TRUE(part->options().scale.has_value());
  EXPECT_DOUBLE_EQ(*part->options().scale, 0.125);
  // An integer field from a string, a JSON integer, or an integral float: the same part.
  for (const char* json : {R"({"name": "local", "window_size": "128"})", R"({"name": "local", "window_size": 128})",
                           R"({"name": "local", "window_size": 128.0})", R"({"name": "local", "window_size": "128.0"})"}) {
    SCOPED_TRACE(json);
    part = attention_from_config(json);
    const AttnBias b = part->bias(kShape);
    ASSERT_STREQ(bias_name(b), "LocalAttentionFromBottomRightMask");
    EXPECT_EQ(std::get<LocalAttentionFromBottomRightMask>(b).window_left, 64);
    EXPECT_EQ(std::get<LocalAttentionFromBottomRightMask>(b).window_right, 64);
  }
  // A number field from a JSON integer.
  EXPECT_DOUBLE_EQ(*attention_from_config(R"({"name": "alibi", "scale": 1})")->options().scale, 1.0);
}

TEST(Registry, LocalWindowsFollowXFormers) {
  // Default window_size 5: |i - j| <= 2.
  AttnBias b = attention_from_config(R"({"name": "local"})")->bias(kShape);
  ASSERT_STREQ(bias_name(b), "LocalAttentionFromBottomRightMask");
  EXPECT_EQ(std::get<LocalAttentionFromBottomRightMask>(b).window_left, 2);
  // Causal: local_1d_pattern & causal_1d_pattern, i - 64 <= j <= i: 65 keys.
  b = attention_from_config(R"({"name": "local", "window_size": "128", "causal": true})")->bias(kShape);
  ASSERT_STREQ(bias_name(b), "LowerTriangularFromBottomRightLocalAttentionMask");
  EXPECT_EQ(std::get<LowerTriangularFromBottomRightLocalAttentionMask>(b).window_size, 65);
  // Left and right windows.
  b = attention_from_config(R"({"name": "local", "window_left": 3, "window_right": "0"})")->bias(kShape);
  ASSERT_STREQ(bias_name(b), "LocalAttentionFromBottomRightMask");
  EXPECT_EQ(std::get<LocalAttentionFromBottomRightMask>(b).window_left, 3);
  EXPECT_EQ(std::get<LocalAttentionFromBottomRightMask>(b).window_right, 0);
  // The materialized mask of the default part is xFormers' local_1d_pattern(4, 5) on a 4x4 call.
  const std::vector<double> m = materialize(attention_from_config(R"({"name": "local"})")->bias({1, 1, 4, 4}), 1, 1, 4, 4);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(std::isinf(m[size_t(i * 4 + j)]), std::abs(i - j) > 2) << i << "," << j;
}

TEST(Registry, AlibiBuildsGeometricSlopesForTheCallsHeads) {
  auto part = attention_from_config(R"({"name": "alibi", "causal": true})");
  AttnBias b = part->bias(kShape);
  ASSERT_STREQ(bias_name(b), "LowerTriangularMaskWithAlibi");
  const std::vector<float>& s = std::get<LowerTriangularMaskWithAlibi>(b).slopes.slopes.host();
  ASSERT_EQ(s.size(), 8u);
  EXPECT_FLOAT_EQ(s[0], 0.5f);      // 2^(-8·1/8)
  EXPECT_FLOAT_EQ(s[7], 1.f / 256);  // 2^(-8·8/8)
  EXPECT_EQ(std::get<LowerTriangularMaskWithAlibi>(part->bias({1, 4, 16, 16})).slopes.slopes.host().size(), 4u);
  b = attention_from_config(R"({"name": "alibi"})")->bias(kShape);  // the Python part's default: not causal
  EXPECT_STREQ(bias_name(b), "AlibiBias");
  EXPECT_THROW(part->bias({1, 0, 16, 16}), Error);
  // num_heads (FairSeq adds it) must then be the call's H.
  part = attention_from_config(R"({"name": "alibi", "num_heads": "8"})");
  EXPECT_STREQ(bias_name(part->bias(kShape)), "AlibiBias");
  EXPECT_THROW(part->bias({1, 4, 16, 16}), Error);
}

TEST(Registry, VariantPartCarriesSnippetsAndScalarCaptures) {
  auto part = attention_from_config(R"({"name": "variant", "mask_mod": "kv_idx <= q_idx && q_idx - kv_idx < w",
      "score_mod": "return cap * tanhf(score / cap);",
      "score_grad": "const float t = tanhf(score / cap); return 1.f - t * t;",
      "captures": {"w": "64", "cap": 30.5}, "dropout": "0.0"})");
  const Variant* v = part->variant();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->mask_code(), "kv_idx <= q_idx && q_idx - kv_idx < w");
  EXPECT_FALSE(v->score_grad_code().empty());
  EXPECT_NE(v->code_id(), 0u);
  ASSERT_EQ(v->captures().size(), 2u);
  for (const Variant::Capture& c : v->captures()) {
    if (c.name == "w") {
      EXPECT_EQ(c.kind, Variant::Capture::Kind::i32);
      EXPECT_EQ(c.i, 64);
    } else {
      EXPECT_EQ(c.name, "cap");
      EXPECT_EQ(c.kind, Variant::Capture::Kind::f32);
      EXPECT_FLOAT_EQ(c.f, 30.5f);
    }
  }
  EXPECT_STREQ(bias_name(part->bias(kShape)), "None");
  EXPECT_EQ(part->forward_options().variant, v);
  EXPECT_EQ(part->backward_options().variant, v);

  part = attention_from_config(R"({"name": "variant", "score_mod": "score + 0.5f * h", "additive": true, "causal": true})");
  EXPECT_STREQ(bias_name(part->bias(kShape)), "LowerTriangularMask");
  EXPECT_TRUE(part->variant()->additive());
}

TEST(Registry, OptionsCarryTheCallsSeedAndOffset) {
  auto part = attention_from_config(R"({"name": "scaled_dot_product", "dropout": 0.25, "scale": 0.5})");
  const AttentionOptions f = part->forward_options(7, 9);
  EXPECT_EQ(f.p, 0.25);
  EXPECT_EQ(*f.scale, 0.5);
  EXPECT_EQ(f.seed, 7u);
  EXPECT_EQ(f.offset, 9u);
  EXPECT_EQ(f.variant, nullptr);
  const BackwardOptions b = part->backward_options(7, 9);
  EXPECT_EQ(b.p, 0.25);
  EXPECT_EQ(*b.scale, 0.5);
  EXPECT_EQ(b.seed, 7u);
  EXPECT_EQ(b.offset, 9u);
}

TEST(Registry, CallShapeFromTheTensors) {
  const auto q3 = TensorView::make(nullptr, DType::f16, {2, 10, 64});
  const auto k3 = TensorView::make(nullptr, DType::f16, {2, 12, 64});
  CallShape s = CallShape::of(q3, k3);
  EXPECT_EQ(s.B, 2); EXPECT_EQ(s.H, 1); EXPECT_EQ(s.Mq, 10); EXPECT_EQ(s.Mkv, 12);
  s = CallShape::of(TensorView::make(nullptr, DType::f16, {3, 10, 4, 64}), TensorView::make(nullptr, DType::f16, {3, 7, 2, 64}));
  EXPECT_EQ(s.B, 3); EXPECT_EQ(s.H, 4); EXPECT_EQ(s.Mq, 10); EXPECT_EQ(s.Mkv, 7);
  s = CallShape::of(TensorView::make(nullptr, DType::f16, {1, 10, 2, 3, 64}),
                    TensorView::make(nullptr, DType::f16, {1, 5, 2, 3, 64}));
  EXPECT_EQ(s.H, 6); EXPECT_EQ(s.Mkv, 5);
}

TEST(Registry, UnknownNameListsTheRegisteredNames) {
  // FairSeq's linformer example: not a kernel variant in C++.
  const Error e = refusal(R"({"name": "linformer", "seq_len": "256"})");
  const std::string r = joined(e);
  EXPECT_NE(r.find("unknown attention \"linformer\""), std::string::npos) << r;
  for (const char* n : {"alibi", "local", "scaled_dot_product", "variant"}) EXPECT_NE(r.find(n), std::string::npos) << r;
  EXPECT_NE(joined(refusal(R"({"window_size": 3})")).find("registered attentions: "), std::string::npos);
  EXPECT_NE(joined(refusal(R"({"name": 3})")).find("registered attentions: "), std::string::npos);
  refusal(R"(["scaled_dot_product"])");
  refusal(R"({"name": "local",)");
  EXPECT_THROW(make_attention("nope"), Error);
  EXPECT_THROW(attention_config_fields("nope"), Error);
}

TEST(Registry, BadFieldsNameTheFieldAndListTheFields) {
  std::string r = joined(refusal(R"({"name": "local", "windw_size": "128"})"));
  EXPECT_NE(r.find("unknown field \"windw_size\""), std::string::npos) << r;
  EXPECT_NE(r.find("window_size (integer, default 5;"), std::string::npos) << r;
  EXPECT_NE(r.find("causal (bool, default false;"), std::string::npos) << r;

  r = joined(refusal(R"({"name": "local", "window_size": "12a"})"));
  EXPECT_NE(r.find("field \"window_size\" = \"12a\" must be an integer"), std::string::npos) << r;
  EXPECT_NE(r.find("\"local\" takes the fields"), std::string::npos) << r;
  r = joined(refusal(R"({"name": "local", "window_size": 2.5})"));
  EXPECT_NE(r.find("\"window_size\" = 2.5 must be an integer"), std::string::npos) << r;
  r = joined(refusal(R"({"name": "local", "window_size": [128]})"));
  EXPECT_NE(r.find("\"window_size\" = [128]"), std::string::npos) << r;
  r = joined(refusal(R"({"name": "scaled_dot_product", "causal": "maybe", "dropout": true})"));
  EXPECT_NE(r.find("\"causal\" = \"maybe\" must be a bool"), std::string::npos) << r;
  EXPECT_NE(r.find("\"dropout\" = true must be a finite number"), std::string::npos) << r;
  // Values the part refuses.
  EXPECT_NE(joined(refusal(R"({"name": "scaled_dot_product", "dropout": "1.5"})")).find("\"dropout\" = 1.5 must be in [0, 1)"),
            std::string::npos);
  EXPECT_NE(joined(refusal(R"({"name": "local", "window_size": 0})")).find("\"window_size\" = 0"), std::string::npos);
  refusal(R"({"name": "local", "window_left": 3})");
  refusal(R"({"name": "local", "window_left": 3, "window_right": 1, "causal": true})");
  // Variants: no snippet, a reserved capture name, a capture that is not a number.
  refusal(R"({"name": "variant"})");
  EXPECT_NE(joined(refusal(R"({"name": "variant", "mask_mod": "true", "captures": {"q_idx": 1}})")).find("q_idx"),
            std::string::npos);
  EXPECT_NE(joined(refusal(R"({"name": "variant", "mask_mod": "true", "captures": {"w": "wide"}})")).find("member \"w\""),
            std::string::npos);
  // The C++ map path checks the same way.
  try {
    make_attention("local", {{"window_size", ConfigValue(std::string("x"))}});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(joined(e).find("\"window_size\" = \"x\""), std::string::npos) << joined(e);
  }
  EXPECT_STREQ(bias_name(make_attention("local", {{"window_size", ConfigValue(std::string("16"))}, {"causal", ConfigValue(true)}})
                             ->bias(kShape)),
               "LowerTriangularFromBottomRightLocalAttentionMask");
}

// Hostile JSON: a key given twice is refused (not the last one silently winning), nesting is
// refused as the parser reads it (10^5 brackets overflowed the stack when the error dumped them),
// and bytes that are not UTF-8 give jitattn's error, not nlohmann's type_error.
TEST(Registry, HostileJsonGetsAClearError) {
  std::string r = joined(refusal(R"({"name": "local", "window_size": 3, "window_size": 128})"));
  EXPECT_NE(r.find("key \"window_size\" appears twice in one object"), std::string::npos) << r;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  r = joined(refusal(deep));
  EXPECT_NE(r.find("nested deeper than 8 levels"), std::string::npos) << r;
  r = joined(refusal(R"({"name": )" + deep + "}"));
  EXPECT_NE(r.find("nested deeper"), std::string::npos) << r;
  EXPECT_LT(r.size(), 2000u) << "the error echoes its input";
  r = joined(refusal(std::string(R"({"name": "lo\xe9cal"})")));
  EXPECT_NE(r.find("not JSON"), std::string::npos) << r;  // nlohmann's parser refuses invalid UTF-8
  // The C++ map path: any bytes in a string value.
  try {
    make_attention("local", {{"window_size", ConfigValue(std::string("12\xe9"))}});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(joined(e).find("\"window_size\""), std::string::npos) << joined(e);
  }
  EXPECT_NO_THROW(make_attention("variant", {{"mask_mod", ConfigValue(std::string("q_idx >= kv_idx /* caf\xe9 */"))}}));
}

// A part registered by the caller: found by name, built from JSON, its fields checked.
class EveryOtherKey : public AttentionPart {
 public:
  explicit EveryOtherKey(int64_t w) : AttentionPart("test_banded"), w_(w) {}
  AttnBias bias(const CallShape&) const override { return LowerTriangularFromBottomRightLocalAttentionMask{int32_t(w_)}; }
  AttentionOptions options() const override {
    AttentionOptions o;
    o.scale = 1.0 / double(w_);
    return o;
  }

 private:
  int64_t w_;
};

TEST(Registry, UserRegisteredPartIsFoundByName) {
  register_attention("test_banded",
                     [](const Config& c) { return std::make_shared<EveryOtherKey>(std::get<int64_t>(c.at("band"))); },
                     {{"band", FieldType::integer, ConfigValue(int64_t(4)), false, "keys per query"}});
  const std::vector<std::string> names = registered_attentions();
  EXPECT_NE(std::find(names.begin(), names.end(), "test_banded"), names.end());
  auto part = attention_from_config(R"({"name": "test_banded", "band": "32"})");
  EXPECT_EQ(part->name(), "test_banded");
  const AttnBias b = part->bias(kShape);
  ASSERT_STREQ(bias_name(b), "LowerTriangularFromBottomRightLocalAttentionMask");
  EXPECT_EQ(std::get<LowerTriangularFromBottomRightLocalAttentionMask>(b).window_size, 32);
  EXPECT_DOUBLE_EQ(*part->options().scale, 1.0 / 32);
  EXPECT_DOUBLE_EQ(*attention_from_config(R"({"name": "test_banded"})")->options().scale, 0.25);  // the default
  EXPECT_NE(joined(refusal(R"({"name": "test_banded", "bnad": 1})")).find("band (integer, default 4; keys per query)"),
            std::string::npos);
  EXPECT_NE(joined(refusal(R"({"name": "nope"})")).find("test_banded"), std::string::npos);
  // Twice, a reserved field name, a default of the wrong type: refused.
  EXPECT_THROW(register_attention("test_banded", [](const Config&) { return std::make_shared<EveryOtherKey>(1); }, {}), Error);
  EXPECT_THROW(register_attention("test_bad1", [](const Config&) { return std::make_shared<EveryOtherKey>(1); },
                                  {{"name", FieldType::string, std::nullopt, false, ""}}),
               Error);
  EXPECT_THROW(register_attention("test_bad2", [](const Config&) { return std::make_shared<EveryOtherKey>(1); },
                                  {{"band", FieldType::integer, ConfigValue(std::string("wide")), false, ""}}),
               Error);
  EXPECT_THROW(register_attention("", [](const Config&) { return std::make_shared<EveryOtherKey>(1); }, {}), Error);
  // A required field.
  register_attention("test_required",
                     [](const Config& c) { return std::make_shared<EveryOtherKey>(std::get<int64_t>(c.at("band"))); },
                     {{"band", FieldType::integer, std::nullopt, true, ""}});
  EXPECT_NE(joined(refusal(R"({"name": "test_required"})")).find("\"band\" is required"), std::string::npos);
  EXPECT_EQ(std::get<LowerTriangularFromBottomRightLocalAttentionMask>(
                attention_from_config(R"({"name": "test_required", "band": 3})")->bias(kShape))
                .window_size,
            3);
}

}  // namespace
}  // namespace jitattn

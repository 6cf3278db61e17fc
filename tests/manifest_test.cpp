// The manifest reader's limits (docs/manifest.md, "Limits"): no input crashes it, hangs it or
// makes it expand into a week of compiles, and what the API would refuse a manifest refuses too.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "child_process.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"
#include "temp_dir.h"
#include "tools/manifest.h"

namespace jitattn::tools {
namespace {

namespace fs = std::filesystem;

const std::vector<jit::Arch> kSm80 = {*jit::Arch::parse("sm_80")};

// The reasons parse_manifest_text gives for `text`, joined; "" when it parses.
std::string error_of(const std::string& text, const std::string& source = "m.json", size_t max_kernels = kDefaultMaxKernels) {
  try {
    parse_manifest_text(text, kSm80, source, max_kernels);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// 70,000 nested arrays parsed fine and then overflowed the stack in the error message's dump().
TEST(Manifest, DeepNestingIsAnErrorNotACrash) {
  const size_t depth = 70000;
  const std::string arrays = std::string(depth, '[') + std::string(depth, ']');
  std::string objects;
  for (size_t i = 0; i < depth; ++i) objects += "{\"a\":";
  objects += "1" + std::string(depth, '}');
  for (const std::string& text : {arrays, "{\"kernels\": " + arrays + "}", objects, "# deep\n" + objects + "\n"}) {
    const std::string err = error_of(text);
    EXPECT_TRUE(has(err, "nested deeper than 32 levels")) << err.substr(0, 300);
    EXPECT_LT(err.size(), 400u);
  }
  // A JSON Lines file with one deep line names the line.
  const std::string lines = "{\"dtype\": \"f16\", \"head_dim\": 64}\n" + arrays + "\n";
  EXPECT_TRUE(has(error_of(lines, "m.jsonl"), "m.jsonl:2: nested deeper than 32 levels")) << error_of(lines, "m.jsonl");
  // The depth a manifest needs is fine.
  EXPECT_EQ(error_of(R"({"kernels": [{"dtype": "f16", "head_dim": [32, 64]}]})"), "");
}

TEST(Manifest, ErrorsClipTheValuesTheyEcho) {
  const std::string big(1 << 20, 'x');
  for (const std::string& text : {R"({"dtype": ")" + big + R"(", "head_dim": 64})",
                                  R"({"dtype": "f16", "head_dim": 64, ")" + big + R"(": 1})",
                                  R"([{"dtype": "f16", "head_dim": [)" + std::string(100000, '1') + "]}]",
                                  R"([{"name": ")" + big + R"("}])", R"([[")" + big + R"("]])",
                                  "[\"" + big}) {  // a syntax error quotes the token it last read
    const std::string err = error_of(text);
    EXPECT_FALSE(err.empty());
    EXPECT_LT(err.size(), 600u) << err.substr(0, 600);
  }
  EXPECT_TRUE(has(error_of(R"({"dtype": ")" + big + R"(", "head_dim": 64})"), "(1048578 bytes)"));
}

// json::parse keeps the last of two equal keys, so {"head_dim": 64, "head_dim": 128} silently
// prewarmed only 128.
TEST(Manifest, DuplicateKeysAreAnError) {
  EXPECT_TRUE(has(error_of(R"({"dtype": "f16", "head_dim": 64, "head_dim": 128})"),
                  R"(m.json: key "head_dim" appears twice in one object)"))
      << error_of(R"({"dtype": "f16", "head_dim": 64, "head_dim": 128})");
  EXPECT_TRUE(has(error_of(R"({"kernels": [{"dtype": "f16", "head_dim": 64}], "kernels": []})"), "\"kernels\" appears twice"));
  EXPECT_TRUE(has(error_of(R"([{"dtype": "f16", "head_dim": 64, "dtype": "bf16"}])"), "\"dtype\" appears twice"));
  const std::string lines = "{\"dtype\": \"f16\", \"head_dim\": 64}\n{\"dtype\": \"f16\", \"lse\": true, \"lse\": false, \"head_dim\": 64}\n";
  EXPECT_TRUE(has(error_of(lines, "m.jsonl"), R"(m.jsonl:2: key "lse" appears twice)")) << error_of(lines, "m.jsonl");
  // Equal keys in different objects are no duplicate.
  EXPECT_EQ(error_of(R"([{"dtype": "f16", "head_dim": 64}, {"dtype": "bf16", "head_dim": 64}])"), "");
}

// A list per field: 4 archs x 3 dtypes x 32 head dims x every bias kind x 2 x 4 ops x 2 x 2,
// hundreds of thousands of kernels, which prewarm started compiling (about a week).
TEST(Manifest, AProductOverTheLimitIsRefusedBeforeExpanding) {
  std::string head_dims, biases;
  for (int d = 8; d <= 256; d += 8) head_dims += (head_dims.empty() ? "" : ", ") + std::to_string(d);
  int kinds = 0;
  for (; std::string(jit::to_string(jit::BiasKind(kinds))) != "?"; ++kinds)
    biases += std::string(biases.empty() ? "\"" : ", \"") + jit::to_string(jit::BiasKind(kinds)) + "\"";
  const std::string huge = R"({"arch": ["sm_80", "sm_86", "sm_89", "sm_90a"], "dtype": ["f16", "bf16", "f32"], "head_dim": [)" +
                           head_dims + "], \"bias\": [" + biases + R"(], "lse": [false, true], "op": ["fwd", "bwd", "bwd_kv", "bwd_dq"],)"
                           R"( "dropout": [false, true], "dbias": [false, true]})";
  const std::string err = error_of(huge);
  const std::string count = std::to_string(4 * 3 * 32 * kinds * 2 * 4 * 2 * 2);
  EXPECT_TRUE(has(err, "m.json: the entry stands for " + count + " kernels (arch 4 x dtype 3 x head_dim 32 x bias " +
                           std::to_string(kinds) + " x lse 2 x op 4 x dropout 2 x dbias 2), more than the limit of 4096"))
      << err;
  EXPECT_TRUE(has(err, "--max-kernels")) << err;
  // A product past 2^64 saturates instead of wrapping round to a small number.
  auto list = [](const std::string& value, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += (out.empty() ? "" : ", ") + value;
    return "[" + out + "]";
  };
  const std::string vast = "{\"dtype\": " + list("\"f16\"", 300) + ", \"head_dim\": " + list("64", 300) +
                           ", \"arch\": " + list("\"sm_80\"", 300) + ", \"bias\": " + list("\"none\"", 300) +
                           ", \"lse\": " + list("false", 300) + ", \"op\": " + list("\"fwd\"", 300) +
                           ", \"dropout\": " + list("false", 300) + ", \"dbias\": " + list("false", 300) + "}";
  EXPECT_TRUE(has(error_of(vast), "the entry stands for 2^64 or more kernels")) << error_of(vast).substr(0, 300);
  // The limit is a parameter (prewarm's --max-kernels), per entry and over all entries.
  const std::string eight = R"({"dtype": ["f16", "bf16"], "head_dim": [32, 64], "lse": [false, true]})";
  EXPECT_TRUE(has(error_of(eight, "m.json", 7), "the entry stands for 8 kernels (dtype 2 x head_dim 2 x lse 2), more than the limit of 7"))
      << error_of(eight, "m.json", 7);
  EXPECT_TRUE(has(error_of(eight, "m.json", 7), "--max-kernels"));
  EXPECT_EQ(parse_manifest_text(eight, kSm80, "m.json", 8).size(), 8u);
  const std::string lines = "{\"dtype\": \"f16\", \"head_dim\": [32, 64]}\n{\"dtype\": \"bf16\", \"head_dim\": [32, 64]}\n"
                            "{\"dtype\": \"f32\", \"head_dim\": [32, 64]}\n";
  EXPECT_TRUE(has(error_of(lines, "m.jsonl", 5), "m.jsonl:3: the entries up to here stand for 6 kernels, more than the limit of 5"))
      << error_of(lines, "m.jsonl", 5);
  EXPECT_EQ(parse_manifest_text(lines, kSm80, "m.jsonl", 6).size(), 6u);
}

// The API refuses these (api/src/plan.cpp, api/src/backward.cpp); a manifest compiled them.
TEST(Manifest, RefusesWhatTheApiNeverAsksFor) {
  const auto refused = [](const std::string& fields, const std::string& why) {
    const std::string err = error_of("{\"dtype\": \"bf16\", \"head_dim\": 64, " + fields + "}");
    EXPECT_TRUE(has(err, why)) << fields << ": " << err;
  };
  refused(R"("dbias": true)", "dbias is for op \"bwd\" and \"bwd_kv\"");
  refused(R"("op": "bwd_dq", "bias": "tensor", "dbias": true)", "dbias is for op \"bwd\" and \"bwd_kv\"");
  refused(R"("op": "bwd", "bias": "causal", "dbias": true)", "dbias needs bias \"tensor\" or \"causal_tensor\"");
  refused(R"("bias": "pbd", "dropout": true)", "dropout is not supported with bias \"pbd\"");
  refused(R"("bias": ["causal", "pbd_causal_br"], "dropout": [false, true])", "dropout is not supported with bias \"pbd_causal_br\"");
  refused(R"("op": "bwd_pre", "dropout": true)", "dropout is for op \"fwd\", \"bwd\", \"bwd_kv\" and \"bwd_dq\"");
  refused(R"("op": "bwd", "bias": "pbd")", "the backward does not support bias \"pbd\"");
  refused(R"("op": "decode", "odd_pages": true)", "oddpages: only a decode kernel of a paged bias kind");
  refused(R"("op": "fwd", "bias": "pbd", "odd_pages": true)", "oddpages: only a decode kernel of a paged bias kind");
  refused(R"("op": "decode", "bias": "pbd", "odd_pages": 1)", "true or false");
  // A name entry is held to the same rules.
  const std::string name = "fwd.sm_80.bf16.d64.v64.none.nolse_dbias.a16.mma_m128n64w4";
  ASSERT_TRUE(jit::KernelSpec::parse(name)) << name;
  EXPECT_TRUE(has(error_of(R"([{"name": ")" + name + "\"}]"), "dbias is for op")) << error_of(R"([{"name": ")" + name + "\"}]");
  // A user variant's kernel cannot be listed (its code lives in the process that built it).
  const std::string variant = "fwd.sm_80.bf16.d64.v64.causal+u0123456789abcdef.nolse.a16.mma_m128n64w4";
  ASSERT_TRUE(jit::KernelSpec::parse(variant)) << variant;
  EXPECT_TRUE(has(error_of(R"([{"name": ")" + variant + "\"}]"), "list it as fields with a \"variant\" object"));
  // The SwiGLU gate's kernels are listed as the op makes them.
  EXPECT_EQ(error_of(R"({"dtype": "bf16", "head_dim": 8, "op": ["swiglu_fwd", "swiglu_bwd"]})"), "");
  EXPECT_TRUE(has(error_of(R"({"dtype": "bf16", "head_dim": 64, "op": "swiglu_fwd"})"), "head_dim 8"));
  // What the API does ask for still reads.
  EXPECT_EQ(error_of(R"({"dtype": "bf16", "head_dim": 64, "bias": "pbd"})"), "");
  EXPECT_EQ(error_of(R"({"dtype": "bf16", "head_dim": 64, "bias": "causal", "dropout": true, "op": ["fwd", "bwd", "bwd_kv", "bwd_dq"]})"), "");
  EXPECT_EQ(error_of(R"({"dtype": "bf16", "head_dim": 64, "bias": "causal_tensor", "dbias": true, "op": ["bwd", "bwd_kv"]})"), "");
}

// A "variant" object registers the code and gives the kernels an application building the same
// jitattn::Variant looks up (the same +u id); ops without a bias (bwd_pre, bwd_post) take none.
// Pages that are not a multiple of 8 rows are a kernel of their own on sm_90 (cp.async, not
// tensor maps), which a manifest lists with "odd_pages".
TEST(Manifest, OddPagesListTheCpAsyncDecodeKernel) {
  const auto specs = parse_manifest_text(
      R"({"op": "decode", "dtype": "bf16", "head_dim": 128, "bias": "pbd_causal_br", "arch": "sm_90a", "odd_pages": true})", kSm80,
      "m.json", kDefaultMaxKernels);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name(), "decode.sm_90a.bf16.d128.v128.pbd_causal_br.nolse_oddpages.a16.mma_m16n128w8");
  const auto plain = parse_manifest_text(R"({"op": "decode", "dtype": "bf16", "head_dim": 128, "bias": "pbd_causal_br", "arch": "sm_90a"})",
                                         kSm80, "m.json", kDefaultMaxKernels);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0].name(), "decode.sm_90a.bf16.d128.v128.pbd_causal_br.nolse.a16.tma_m16n128w8");
}

TEST(Manifest, AVariantObjectGivesTheApplicationsKernels) {
  const std::string text = R"J({"dtype": "bf16", "head_dim": 64, "bias": "causal", "lse": true,
    "op": ["fwd", "bwd_pre", "bwd", "bwd_post"],
    "variant": {"mask_mod": "doc[q_idx] == doc[kv_idx]", "score_mod": "cap * tanhf(score / cap)",
                "score_grad": "const float t = tanhf(score / cap); return 1.f - t * t;",
                "captures": [{"name": "doc", "kind": "tensor", "type": "i32", "rank": 1},
                             {"name": "cap", "kind": "float"}]}})J";
  const auto specs = parse_manifest_text(text, kSm80);
  Variant app;  // what the application builds (values differ: only the code matters)
  CaptureTensor doc;
  doc.data = &app;
  doc.type = CaptureType::i32, doc.rank = 1, doc.shape[0] = 10, doc.stride[0] = 1;
  app.mask_mod("doc[q_idx] == doc[kv_idx]")
      .score_mod("cap * tanhf(score / cap)", "const float t = tanhf(score / cap); return 1.f - t * t;")
      .capture("doc", doc)
      .capture("cap", 30.f);
  ASSERT_EQ(specs.size(), 4u);
  for (const auto& s : specs) {
    const bool biased = s.sig.op == jit::Op::fwd || s.sig.op == jit::Op::bwd;
    EXPECT_EQ(s.sig.variant, biased ? app.code_id() : 0u) << s.name();
  }
  const auto refused = [](const std::string& variant, const std::string& why) {
    const std::string err = error_of(R"({"dtype": "bf16", "head_dim": 64, "variant": )" + variant + "}");
    EXPECT_TRUE(has(err, why)) << variant << ": " << err;
  };
  refused(R"("x")", "\"variant\" must be an object");
  refused(R"({"mask": "true"})", "unknown field \"variant.mask\"");
  refused(R"({})", "neither mask_mod nor score_mod");
  refused(R"({"mask_mod": "true", "captures": [{"name": "t", "kind": "tensor", "type": "f64", "rank": 1}]})",
          "\"variant.captures[0].type\" must be one of");
  refused(R"({"mask_mod": "true", "captures": [{"name": "t", "kind": "tensor", "type": "f32"}]})", "needs \"type\" and \"rank\"");
  refused(R"({"mask_mod": "true", "captures": [{"name": "int", "kind": "int"}]})", "the name is taken");
  refused(R"({"mask_mod": "w > 0", "captures": [{"name": "w", "kind": "int"}, {"name": "w", "kind": "float"}]})",
          "variant.captures[1].name \"w\" names an earlier capture too");
}

// `--manifest /dev/zero` read forever (and grew without bound); a directory read as empty.
TEST(Manifest, ReadingAFileIsBounded) {
  test::TempDir dir("jitattn_manifest_test");
  const std::string err_file = dir.file("stderr.txt");
  std::string err;
  const bool done = test::finishes_in_child(err_file, 20, [&] {
    try {
      read_manifest("/dev/zero", kSm80);
    } catch (const Error& e) {
      std::fprintf(stderr, "%s", e.what());
    }
  });
  EXPECT_TRUE(done) << "reading /dev/zero did not end";
  EXPECT_TRUE(has(test::file_text(err_file), "manifest /dev/zero is larger than 64 MiB")) << test::file_text(err_file);
  try {
    read_manifest(dir.path.string(), kSm80);
    ADD_FAILURE() << "a directory read as a manifest";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "is a directory")) << e.what();
  }
}

}  // namespace
}  // namespace jitattn::tools

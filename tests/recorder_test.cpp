// JITATTN_RECORD without a GPU: manifest_line is canonical and reads back as the same kernel,
// recording dedupes within a process and across processes appending to one file, and a recorded
// file prewarms exactly the recorded kernels (a second pass compiles nothing). Also the manifest
// reader's JSON Lines form, and the JITATTN_JIT=off error's manifest line.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "jit/jit_runtime.h"
#include "child_process.h"
#include "temp_dir.h"
#include "test_env.h"
#include "jit/recorder.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"
#include "tools/manifest.h"
#include "tools/prewarm.h"

namespace jitattn::jit {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

Signature sig(DType dtype, int head_dim, BiasKind bias, bool lse, const char* arch = "sm_80", int align = 16) {
  Signature s;
  s.dtype = s.out_dtype = dtype;
  s.head_dim = s.head_dim_v = uint16_t(head_dim);
  s.bias = bias;
  s.lse = lse;
  const Arch a = *Arch::parse(arch);
  s.arch_sm = a.sm;
  s.arch_specific = a.specific;
  s.align = uint8_t(dtype == DType::f32 ? 4 : align);  // as the API builds f32 signatures
  return s;
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::ifstream f(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  return lines;
}

// Every bias kind the library knows (the enumerators are dense from 0).
std::vector<BiasKind> all_bias_kinds() {
  std::vector<BiasKind> kinds;
  for (int k = 0; std::string(to_string(BiasKind(k))) != "?"; ++k) kinds.push_back(BiasKind(k));
  return kinds;
}

TEST(Recorder, ManifestLineSpellsEveryFieldInAFixedOrder) {
  Signature s = sig(DType::bf16, 128, BiasKind::causal, true, "sm_90a");
  EXPECT_EQ(manifest_line(s),
            R"({"op":"fwd","arch":"sm_90a","dtype":"bf16","out_dtype":"bf16","head_dim":128,"head_dim_v":128,)"
            R"("bias":"causal","lse":true,"align":16})");
  s.out_dtype = DType::f32;
  s.head_dim_v = 64;
  s.lse = 0;
  s.align = 2;
  EXPECT_EQ(manifest_line(s),
            R"({"op":"fwd","arch":"sm_90a","dtype":"bf16","out_dtype":"f32","head_dim":128,"head_dim_v":64,)"
            R"("bias":"causal","lse":false,"align":2})");
  EXPECT_EQ(manifest_line(s), manifest_line(Signature(s)));  // stable: equal signatures, equal bytes
}

TEST(Recorder, ManifestLineReadsBackAsTheSameKernel) {
  int checked = 0;
  for (const char* arch : {"sm_80", "sm_90a"})
    for (DType dtype : {DType::f16, DType::bf16, DType::f32})
      for (int hd : {32, 64, 128})
        for (BiasKind bias : all_bias_kinds())
          for (bool lse : {false, true})
            for (int align : {2, 16}) {
              const Signature s = sig(dtype, hd, bias, lse, arch, align);
              const KernelSpec want = make_spec(s);
              if (!validate_spec(want).empty()) continue;  // a manifest rejects these; never recorded
              const std::string line = manifest_line(s);
              const auto specs = tools::parse_manifest_text(line, {}, "recorded");
              ASSERT_EQ(specs.size(), 1u) << line;
              EXPECT_TRUE(specs[0].sig == s) << line << " -> " << specs[0].name();
              EXPECT_EQ(specs[0].name(), want.name()) << line;
              EXPECT_EQ(manifest_line(want), line);  // the spec the tile table picks is a field entry
              ++checked;
            }
  EXPECT_GT(checked, 100);
}

// A training process records the backward's kernels too (every op, dropout, dbias): their lines
// read back as the same kernels, and a product entry spells them out.
TEST(Recorder, BackwardAndDropoutLinesReadBackAsTheSameKernel) {
  int checked = 0, skipped = 0;
  for (Op op : kAllOps)
    for (bool dropout : {false, true})
      for (bool dbias : {false, true}) {
        // As api/src/backward.cpp builds them: dropout on fwd, bwd, bwd_kv and bwd_dq only (decode
        // serves p = 0 only), dbias
        // on bwd and bwd_kv only; a manifest refuses the rest (ManifestRefusesWhatTheApiNeverAsksFor).
        const bool swiglu = op == Op::swiglu_fwd || op == Op::swiglu_bwd;
        // block_map kernels exist only with a user variant (VariantRecorder tests record those).
        const bool api_makes = op != Op::block_map &&
                               (!dropout || (op != Op::bwd_pre && op != Op::bwd_post && op != Op::merge && op != Op::decode &&
                                             !swiglu)) &&
                               (!dbias || op == Op::bwd || op == Op::bwd_kv);
        if (!api_makes) {
          ++skipped;
          continue;
        }
        Signature s = sig(DType::bf16, 64, op == Op::merge || op == Op::bwd_pre || op == Op::bwd_post || swiglu ? BiasKind::none : BiasKind::causal_tensor,
                          true, "sm_90a", 16);
        s.op = op, s.dropout = dropout, s.dbias = dbias;
        if (swiglu) s.lse = 0, s.head_dim = s.head_dim_v = 8;  // as jit/ops/swiglu.cpp makes them
        const std::string line = manifest_line(s);
        EXPECT_EQ(line.find("dropout") != std::string::npos, dropout) << line;
        const auto specs = tools::parse_manifest_text(line, {}, "recorded");
        ASSERT_EQ(specs.size(), 1u) << line;
        EXPECT_TRUE(specs[0].sig == s) << line << " -> " << specs[0].name();
        EXPECT_EQ(KernelSpec::parse(specs[0].name())->name(), specs[0].name());
        ++checked;
      }
  EXPECT_EQ(checked + skipped, int(std::size(kAllOps)) * 4);
  EXPECT_EQ(checked, 18);  // fwd 2, bwd_pre 1, bwd 4, bwd_kv 4, bwd_dq 2, bwd_post 1, merge 1, decode 1, swiglu 1 + 1
  const auto specs = tools::parse_manifest_text(
      R"({"op": ["bwd", "bwd_kv", "bwd_dq"], "dtype": "bf16", "head_dim": 128, "bias": "causal", "lse": true,)"
      R"( "dropout": [false, true], "arch": "sm_90a"})", {}, "m");
  EXPECT_EQ(specs.size(), 6u);
  EXPECT_THROW(tools::parse_manifest_text(R"({"op": "bwdx", "dtype": "bf16", "head_dim": 64, "arch": "sm_80"})", {}, "m"),
               Error);
}

TEST(Recorder, ManifestLineOfAnotherTileIsTheName) {
  KernelSpec spec = make_spec(sig(DType::f16, 64, BiasKind::none, false));
  spec.tile.block_n = spec.tile.block_n == 32 ? 64 : 32;
  const std::string line = manifest_line(spec);
  EXPECT_EQ(line, "{\"name\":\"" + spec.name() + "\"}");
  const auto specs = tools::parse_manifest_text(line, {}, "m");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name(), spec.name());
}

TEST(Recorder, DedupesWithinAProcessAndAgainstTheFile) {
  TempDir dir("jitattn_recorder_test");
  const fs::path file = dir.path / "sub" / "recorded.jsonl";  // the directory is created
  const Signature a = sig(DType::f16, 64, BiasKind::none, false), b = sig(DType::bf16, 128, BiasKind::causal, true);
  {
    Recorder r(file.string());
    for (int i = 0; i < 3; ++i) r.record(a);
    r.record(b);
    r.record(a);
  }
  EXPECT_EQ(lines_of(file), (std::vector<std::string>{manifest_line(a), manifest_line(b)}));
  Recorder later(file.string());  // as another process would: its own set, the same file
  later.record(b);
  later.record(a);
  EXPECT_EQ(lines_of(file), (std::vector<std::string>{manifest_line(a), manifest_line(b)}));
  EXPECT_EQ(&Recorder::for_path(file.string()), &Recorder::for_path(file.string()));
}

TEST(Recorder, KeepsWhatAPersonWroteAndStartsItsOwnLine) {
  TempDir dir("jitattn_recorder_test");
  const fs::path file = dir.path / "m.jsonl";
  const Signature a = sig(DType::f16, 64, BiasKind::none, false), b = sig(DType::f16, 32, BiasKind::causal, false);
  std::ofstream(file) << "# by hand\n" << manifest_line(a);  // no final newline
  Recorder r(file.string());
  r.record(a);
  r.record(b);
  EXPECT_EQ(lines_of(file), (std::vector<std::string>{"# by hand", manifest_line(a), manifest_line(b)}));
}

TEST(Recorder, AFailureWarnsOnceAndNeverThrows) {
  TempDir dir("jitattn_recorder_test");
  std::ofstream(dir.path / "file") << "x";
  Recorder r((dir.path / "file" / "under_a_file.jsonl").string());  // cannot be created
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(r.record(sig(DType::f16, 64, BiasKind::none, false)));
  EXPECT_NO_THROW(r.record(sig(DType::f16, 32, BiasKind::none, false)));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("JITATTN_RECORD"), std::string::npos) << err;
  EXPECT_EQ(err.find("JITATTN_RECORD"), err.rfind("JITATTN_RECORD")) << "warned more than once: " << err;
}

// /dev/full and /dev/zero read as endless zeros: reading the file to dedupe never ended and
// grew without bound. A path that is not a regular file warns once and stops recording.
TEST(Recorder, ANonRegularFileWarnsOnceAndStopsRecording) {
  TempDir dir("jitattn_recorder_test");
  const fs::path fifo = dir.path / "fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  for (const fs::path& path : {fs::path("/dev/full"), fs::path("/dev/zero"), fifo}) {
    if (!fs::exists(path)) continue;
    const fs::path err = dir.path / "stderr.txt";
    const bool ok = test::finishes_in_child(err.string(), 10, [&] {
      Recorder r(path.string());
      for (int hd : {32, 64, 32, 128}) r.record(sig(DType::f16, hd, BiasKind::none, false));
    });
    EXPECT_TRUE(ok) << path << ": the recording process hung or crashed";
    const std::string text = test::file_text(err.string());
    EXPECT_NE(text.find("is not a regular file"), std::string::npos) << path << ": " << text;
    EXPECT_EQ(text.find("JITATTN_RECORD"), text.rfind("JITATTN_RECORD")) << path << " warned more than once: " << text;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));  // left as it was
}

// One round of 4 processes recording into `file`; returns how often each line is there.
std::map<std::string, int> record_from_four_processes(const fs::path& file, const std::vector<Signature>& sigs) {
  // Each child records 12 of the 20 (windows overlapping their neighbours'), shuffled, each
  // twice; all start together when the parent closes the pipe, so the appends contend.
  constexpr int kProcs = 4;
  int gate[2];
  EXPECT_EQ(pipe(gate), 0);
  std::vector<pid_t> children;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = fork();
    if (pid == 0) {
      close(gate[1]);
      char c;
      while (read(gate[0], &c, 1) > 0) {}
      std::vector<Signature> mine;
      for (int i = 0; i < 12; ++i) mine.push_back(sigs[size_t((p * 4 + i) % 20)]);
      std::shuffle(mine.begin(), mine.end(), std::mt19937(unsigned(p)));
      Recorder r(file.string());
      for (int round = 0; round < 2; ++round)
        for (const Signature& s : mine) r.record(s);
      _exit(0);  // no gtest teardown in the child
    }
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      break;
    }
    children.push_back(pid);
  }
  close(gate[0]);
  close(gate[1]);
  for (pid_t pid : children) {
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::map<std::string, int> count;
  for (const auto& line : lines_of(file)) ++count[line];
  return count;
}

TEST(Recorder, ForkedProcessesAppendingOverlappingSetsWriteEachLineOnce) {
  TempDir dir("jitattn_recorder_test");
  std::vector<Signature> sigs;
  for (DType dtype : {DType::f16, DType::bf16})
    for (int hd : {32, 64, 96, 128, 256})
      for (BiasKind bias : {BiasKind::none, BiasKind::causal}) sigs.push_back(sig(dtype, hd, bias, hd % 64 == 0));
  ASSERT_EQ(sigs.size(), 20u);

  // Several rounds, each on a new file: a lost race is rare in any one round.
  for (int round = 0; round < 10; ++round) {
    const fs::path file = dir.path / ("recorded" + std::to_string(round) + ".jsonl");
    auto count = record_from_four_processes(file, sigs);
    EXPECT_EQ(count.size(), sigs.size());  // 4 windows of 12 starting 4 apart cover all 20
    for (const Signature& s : sigs) EXPECT_EQ(count[manifest_line(s)], 1) << "round " << round << ": " << manifest_line(s);
    if (HasFailure()) break;
  }
}

using test::env_for;

TEST(Recorder, ARecordedFilePrewarmsExactlyThoseKernelsAndASecondPassCompilesNothing) {
  TempDir dir("jitattn_recorder_test");
  const fs::path file = dir.path / "recorded.jsonl", db = dir.path / "kernels.sqlite";
  const std::vector<Signature> used = {sig(DType::f16, 32, BiasKind::causal, true),
                                       sig(DType::bf16, 32, BiasKind::none, false, "sm_90a"),
                                       sig(DType::f32, 32, BiasKind::causal, false)};
  Recorder r(file.string());
  for (int round = 0; round < 2; ++round)
    for (const Signature& s : used) r.record(s);

  const auto specs = tools::read_manifest(file.string(), {});
  std::vector<std::string> want, got;
  for (const Signature& s : used) want.push_back(make_spec(s).name());
  for (const KernelSpec& s : specs) got.push_back(s.name());
  EXPECT_EQ(got, want);

  {
    JitRuntime rt(env_for(db, JitPolicy::on));
    const auto sum = tools::prewarm(rt, specs, 2);
    EXPECT_EQ(sum.compiled, 3);
    EXPECT_EQ(sum.failed, 0) << (sum.failures.empty() ? "" : sum.failures[0].detail);
    EXPECT_EQ(rt.stats().compiles.load(), 3);
  }
  JitRuntime again(env_for(db, JitPolicy::on));  // a second prewarm run, as a new process
  int reported = 0;
  const auto sum = tools::prewarm(again, specs, 2, [&](const tools::PrewarmResult& res) {
    ++reported;
    EXPECT_EQ(res.detail, db.string()) << res.name;
  });
  EXPECT_EQ(reported, 3);
  EXPECT_EQ(sum.compiled, 0);
  EXPECT_EQ(sum.cached, 3);
  EXPECT_EQ(again.stats().compiles.load(), 0);
}

// A manifest entry with a "variant" object prewarms the variant's kernels; a process that builds
// the same jitattn::Variant then finds them with JITATTN_JIT=off (the deployment path).
TEST(Recorder, AVariantEntryPrewarmsWhatTheApplicationLooksUp) {
  TempDir dir("jitattn_recorder_test");
  const fs::path db = dir.path / "kernels.sqlite";
  const auto specs = tools::parse_manifest_text(
      R"J({"dtype": "f16", "head_dim": 32, "bias": "causal", "arch": "sm_80",
           "variant": {"mask_mod": "(q_idx ^ kv_idx) % 3 != 0 // some mask", "captures": [{"name": "w", "kind": "int"}]}})J",
      {});
  ASSERT_EQ(specs.size(), 1u);
  {
    JitRuntime rt(env_for(db, JitPolicy::on));
    const auto sum = tools::prewarm(rt, specs, 1);
    EXPECT_EQ(sum.compiled, 1);
    EXPECT_EQ(sum.failed, 0) << (sum.failures.empty() ? "" : sum.failures[0].detail);
  }
  Variant app;
  app.mask_mod("(q_idx ^ kv_idx) % 3 != 0 // some mask").capture("w", int32_t(7));
  Signature s = sig(DType::f16, 32, BiasKind::causal, false);
  s.variant = app.code_id();
  JitRuntime off(env_for(db, JitPolicy::off));  // as a deployment: nothing may compile
  const auto rec = off.binary(make_spec(s));
  EXPECT_EQ(rec.name, specs[0].name());
  EXPECT_EQ(off.stats().compiles.load(), 0);
}

// A variant kernel's recorded line carries its code (snippets escaped: quotes, backslashes,
// newlines, comments) and reads back as the same kernel, so a recorded run prewarms it too.
TEST(Recorder, AVariantLineCarriesItsCodeAndReadsBack) {
  Variant v;
  CaptureTensor t;
  t.data = &v;
  t.type = CaptureType::bf16, t.rank = 2, t.shape[0] = t.shape[1] = 4, t.stride[0] = 4, t.stride[1] = 1;
  v.mask_mod("const char* s = \"a\\\"b\"; // a \"quoted\" comment\n\treturn q_idx >= kv_idx && s[0] == 'a';")
      .score_mod("score + tab(h, 0)")
      .additive_score()
      .capture("tab", t)
      .capture("w", 3);
  Signature s = sig(DType::bf16, 64, BiasKind::bd_causal, true, "sm_90a", 16);
  s.variant = v.code_id();
  const std::string line = manifest_line(s);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;  // one JSON Lines record
  const auto specs = tools::parse_manifest_text(line, {}, "recorded");
  ASSERT_EQ(specs.size(), 1u) << line;
  EXPECT_TRUE(specs[0].sig == s) << line << " -> " << specs[0].name();
  for (Op op : {Op::bwd, Op::decode}) {  // the other ops that apply it
    s.op = op;
    const auto again = tools::parse_manifest_text(manifest_line(s), {}, "recorded");
    ASSERT_EQ(again.size(), 1u);
    EXPECT_TRUE(again[0].sig == s) << manifest_line(s);
  }
  // Its block map's builder, as jit/ops/block_map.cpp makes it.
  Signature m;
  m.op = Op::block_map, m.dtype = m.out_dtype = DType::f32, m.head_dim = m.head_dim_v = 8;
  m.arch_sm = 90, m.arch_specific = 1, m.align = 4, m.variant = v.code_id();
  const auto map = tools::parse_manifest_text(manifest_line(m), {}, "recorded");
  ASSERT_EQ(map.size(), 1u) << manifest_line(m);
  EXPECT_TRUE(map[0].sig == m) << manifest_line(m) << " -> " << map[0].name();
  m.variant = 0;  // a builder without its mask_mod is a mistake in a manifest
  EXPECT_THROW(tools::parse_manifest_text(manifest_line(m), {}, "recorded"), std::exception);
}

TEST(Recorder, JitOffErrorPrintsTheManifestLineThatWouldHaveProducedIt) {
  TempDir dir("jitattn_recorder_test");
  JitRuntime rt(env_for(dir.path / "kernels.sqlite", JitPolicy::off));
  const KernelSpec spec = make_spec(sig(DType::bf16, 64, BiasKind::causal, true, "sm_90a"));
  try {
    rt.binary(spec);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what(), line = manifest_line(spec.sig);
    EXPECT_NE(msg.find(spec.name()), std::string::npos) << msg;
    const size_t at = msg.find(line);
    ASSERT_NE(at, std::string::npos) << msg;
    const auto specs = tools::parse_manifest_text(msg.substr(at), {}, "from the error");
    ASSERT_EQ(specs.size(), 1u);
    EXPECT_EQ(specs[0].name(), spec.name());
  }
  EXPECT_EQ(rt.stats().compiles.load(), 0);
}

// ---- the manifest reader's file forms ---------------------------------------------------

std::vector<std::string> names(const std::vector<KernelSpec>& specs) {
  std::vector<std::string> out;
  for (const auto& s : specs) out.push_back(s.name());
  return out;
}

TEST(Recorder, ManifestJsonLinesSkipBlankAndCommentLines) {
  const Signature a = sig(DType::f16, 64, BiasKind::none, false), b = sig(DType::bf16, 128, BiasKind::causal, true);
  const std::string text = "# recorded by JITATTN_RECORD\n\n" + manifest_line(a) + "\n  # indented comment\r\n" +
                           manifest_line(b) + "\r\n" + manifest_line(a) + "\n";
  EXPECT_EQ(names(tools::parse_manifest_text(text, {})),
            (std::vector<std::string>{make_spec(a).name(), make_spec(b).name()}));
  // Lines may be any entry, products included, and take the --arch list like array entries.
  const auto specs = tools::parse_manifest_text(R"({"dtype": "f16", "head_dim": [32, 64]})"
                                                "\n"
                                                R"({"dtype": "bf16", "head_dim": 32})",
                                                {*Arch::parse("sm_80"), *Arch::parse("sm_90a")});
  EXPECT_EQ(specs.size(), 6u);
}

TEST(Recorder, ManifestDocumentFormsStillRead) {
  const std::vector<Arch> sm80 = {*Arch::parse("sm_80")};
  EXPECT_EQ(tools::parse_manifest_text(R"([{"dtype": "f16", "head_dim": 64}])", sm80).size(), 1u);
  EXPECT_EQ(tools::parse_manifest_text("{\"kernels\": [\n {\"dtype\": \"f16\",\n  \"head_dim\": [32, 64]}\n]}", sm80).size(), 2u);
  // One entry pretty-printed over several lines is one document, not broken JSON Lines.
  EXPECT_EQ(tools::parse_manifest_text("{\n  \"dtype\": \"bf16\",\n  \"head_dim\": 64\n}\n", sm80).size(), 1u);
}

TEST(Recorder, ManifestErrorsNameTheLine) {
  try {
    tools::parse_manifest_text("# ok\n{\"dtype\": \"f16\", \"head_dim\": 64, \"arch\": \"sm_80\"}\n{\"dtype\": \"f16\", "
                               "\"head_dims\": 64}\nnot json\n",
                               {}, "m.jsonl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("m.jsonl:4: not valid JSON"), std::string::npos) << msg;
  }
  try {
    tools::parse_manifest_text("{\"dtype\": \"f16\", \"head_dims\": 64}\n{\"dtype\": \"f16\", \"head_dim\": 100}\n", {},
                               "m.jsonl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    ASSERT_EQ(e.reasons().size(), 2u) << e.what();
    EXPECT_EQ(e.reasons()[0], "m.jsonl:1: unknown field \"head_dims\"");
    EXPECT_EQ(e.reasons()[1].rfind("m.jsonl:2: ", 0), 0u) << e.reasons()[1];
  }
  try {
    tools::parse_manifest_text("[{\"dtype\": \"f16\",]", {}, "m.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("m.json is not valid JSON", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace jitattn::jit

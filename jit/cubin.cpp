#include "jit/cubin.h"

#include <elf.h>

#include <cstdint>
#include <cstring>

namespace jitattn::jit {
namespace {

// Reads a T at `offset`, or false when it would run past the end (a truncated or forged file).
template <class T>
bool read_at(const std::string& bin, uint64_t offset, T& out) {
  if (offset > bin.size() || bin.size() - offset < sizeof(T)) return false;
  std::memcpy(&out, bin.data() + offset, sizeof(T));
  return true;
}

}  // namespace

std::string cubin_problem(const std::string& bin, const std::string& entry) { return binary_problem(bin, entry, Arch{}); }

std::string binary_problem(const std::string& bin, const std::string& entry, const Arch& arch) {
  constexpr uint16_t kEmAmdgpu = 224;       // EM_AMDGPU
  constexpr uint32_t kAmdgpuMachMask = 0xff;  // EF_AMDGPU_MACH
  const GfxTarget* gfx = arch.gfx();
  Elf64_Ehdr eh;
  if (!read_at(bin, 0, eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return "the binary is not an ELF file";
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB) return "the binary is not a 64-bit little-endian ELF";
  if (arch.backend == Backend::hip) {
    if (eh.e_machine != kEmAmdgpu) return "the binary is an ELF file but not an AMDGPU code object";
    if (!gfx || (eh.e_flags & kAmdgpuMachMask) != gfx->elf_mach)
      return "the code object is not for " + arch.name() + " (EF_AMDGPU_MACH " + std::to_string(eh.e_flags & kAmdgpuMachMask) + ")";
  } else if (eh.e_machine != EM_CUDA) {
    return "the binary is an ELF file but not a CUDA cubin";
  }
  if (eh.e_shentsize != sizeof(Elf64_Shdr)) return "the cubin's section headers are malformed";
  for (uint16_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    if (!read_at(bin, eh.e_shoff + uint64_t(i) * sizeof(Elf64_Shdr), sh)) return "the cubin is truncated";
    if (sh.sh_type != SHT_SYMTAB) continue;
    Elf64_Shdr strtab;
    if (sh.sh_link >= eh.e_shnum || !read_at(bin, eh.e_shoff + uint64_t(sh.sh_link) * sizeof(Elf64_Shdr), strtab) ||
        strtab.sh_offset > bin.size() || bin.size() - strtab.sh_offset < strtab.sh_size)
      return "the cubin's string table is malformed";
    for (uint64_t at = 0; at + sizeof(Elf64_Sym) <= sh.sh_size; at += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      if (!read_at(bin, sh.sh_offset + at, sym)) return "the cubin is truncated";
      if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_shndx == SHN_UNDEF) continue;
      if (sym.st_name >= strtab.sh_size) continue;
      const char* name = bin.data() + strtab.sh_offset + sym.st_name;
      const size_t room = size_t(strtab.sh_size - sym.st_name);
      if (entry.size() < room && strnlen(name, room) == entry.size() && std::memcmp(name, entry.data(), entry.size()) == 0) return "";
    }
  }
  return "the cubin defines no function " + entry + " (it was compiled for another kernel or key)";
}

}  // namespace jitattn::jit

// Test helper: a function's address range and the GNU build-ID, read from an ELF64 file's
// section headers (the test apps are built with symbols), to check crash captures against.
#pragma once

#include <elf.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/file.h"

namespace moat::device::sandbox::testing {

struct ElfSymbol {
  uint64_t address = 0;  // st_value: the ELF virtual address
  uint64_t size = 0;
};

class ElfFile {
 public:
  static std::optional<ElfFile> Load(const std::string& path) {
    auto bytes = ReadFile(path, 64 << 20);
    if (!bytes || bytes->size() < sizeof(Elf64_Ehdr)) return std::nullopt;
    ElfFile f;
    f.bytes_ = std::move(*bytes);
    std::memcpy(&f.ehdr_, f.bytes_.data(), sizeof f.ehdr_);
    if (std::memcmp(f.ehdr_.e_ident, ELFMAG, SELFMAG) != 0 ||
        f.ehdr_.e_ident[EI_CLASS] != ELFCLASS64 || f.ehdr_.e_shentsize != sizeof(Elf64_Shdr) ||
        f.ehdr_.e_shoff + f.ehdr_.e_shnum * sizeof(Elf64_Shdr) > f.bytes_.size()) {
      return std::nullopt;
    }
    return f;
  }

  std::optional<ElfSymbol> Symbol(std::string_view name) const {
    for (unsigned i = 0; i < ehdr_.e_shnum; ++i) {
      Elf64_Shdr sh = Section(i);
      if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= ehdr_.e_shnum) continue;
      Elf64_Shdr strtab = Section(sh.sh_link);
      for (uint64_t at = sh.sh_offset; at + sizeof(Elf64_Sym) <= sh.sh_offset + sh.sh_size;
           at += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        std::memcpy(&sym, bytes_.data() + at, sizeof sym);
        if (strtab.sh_offset + sym.st_name >= bytes_.size()) continue;
        const char* s = bytes_.data() + strtab.sh_offset + sym.st_name;
        if (name ==
            std::string_view(s, strnlen(s, bytes_.size() - strtab.sh_offset - sym.st_name))) {
          return ElfSymbol{sym.st_value, sym.st_size};
        }
      }
    }
    return std::nullopt;
  }

  std::string BuildId() const {
    for (unsigned i = 0; i < ehdr_.e_shnum; ++i) {
      Elf64_Shdr sh = Section(i);
      if (sh.sh_type != SHT_NOTE) continue;
      uint64_t at = sh.sh_offset;
      while (at + sizeof(Elf64_Nhdr) <= sh.sh_offset + sh.sh_size) {
        Elf64_Nhdr nh;
        std::memcpy(&nh, bytes_.data() + at, sizeof nh);
        uint64_t desc = at + sizeof nh + ((nh.n_namesz + 3) & ~3u);
        if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4) {
          std::string hex;
          for (uint32_t b = 0; b < nh.n_descsz; ++b) {
            hex += fmt::format("{:02x}", static_cast<uint8_t>(bytes_[desc + b]));
          }
          return hex;
        }
        at = desc + ((nh.n_descsz + 3) & ~3u);
      }
    }
    return "";
  }

 private:
  Elf64_Shdr Section(unsigned i) const {
    Elf64_Shdr sh;
    std::memcpy(&sh, bytes_.data() + ehdr_.e_shoff + i * sizeof sh, sizeof sh);
    return sh;
  }
  std::string bytes_;
  Elf64_Ehdr ehdr_{};
};

}  // namespace moat::device::sandbox::testing

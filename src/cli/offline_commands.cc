#include "cli/offline_commands.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/package_directory.h"
#include "core/clock.h"
#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/key.h"
#include "crypto/x509.h"
#include "formats/app_manifest.h"
#include "formats/hardware_definition.h"
#include "formats/image_package.h"

namespace moat::cli {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxKeyFileBytes = 64 * 1024;
constexpr size_t kMaxPackageBytes = 512u << 20;
constexpr size_t kMaxManifestFileBytes = 64 * 1024;
constexpr size_t kMaxHardwareDefinitionBytes = 1 << 20;

// Loads a trusted image-signing key: a PEM public key or a PEM certificate.
Result<crypto::PublicKey> LoadTrustedKey(const fs::path& path) {
  MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, kMaxKeyFileBytes));
  if (pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
    auto cert = crypto::Certificate::FromPem(pem);
    if (!cert) return Fail(cert.error().WithContext(path.string()));
    return cert->public_key();
  }
  if (pem.find("PRIVATE KEY-----") != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument,
                "{} holds a private key; --trust takes the public key (.pub) or a certificate",
                path.string());
  }
  auto key = crypto::PublicKey::FromPem(pem);
  if (!key) return Fail(key.error().WithContext(path.string()));
  return *key;
}

std::string_view ImageTypeLabel(formats::ImageType t) {
  return t == formats::ImageType::kApplication ? "Application" : "OS";
}

std::string FormatBytes(uint64_t n) {
  if (n >= (1u << 20)) return fmt::format("{:.1f} MiB ({} bytes)", n / 1048576.0, n);
  if (n >= 1024) return fmt::format("{:.1f} KiB ({} bytes)", n / 1024.0, n);
  return fmt::format("{} bytes", n);
}

// ---- keygen ----

void DoKeygen(Streams s, int& exit_code, const std::string& type_name, const std::string& dest) {
  Run(s, exit_code, "keygen", [&]() -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(crypto::KeyType type, crypto::ParseKeyType(type_name));
    fs::path key_path = dest + ".key";
    fs::path pub_path = dest + ".pub";
    for (const auto& p : {key_path, pub_path}) {
      if (fs::exists(p)) {
        return Fail(ErrorCode::kAlreadyExists, "{} already exists; refusing to overwrite a key",
                    p.string());
      }
    }
    MOAT_ASSIGN_OR_RETURN(crypto::PrivateKey key, crypto::PrivateKey::Generate(type));
    MOAT_ASSIGN_OR_RETURN(crypto::SecretString pem, key.ToPem());
    // SECURITY: the private key is created 0600 and never overwrites an existing file.
    MOAT_TRY(AtomicWriteFile(key_path, pem.view(), {.mode = 0600, .exclusive = true}));
    MOAT_TRY(
        AtomicWriteFile(pub_path, key.public_key().ToPem(), {.mode = 0644, .exclusive = true}));
    s.out << fmt::format("Created {} signing key.\n", crypto::KeyTypeName(type));
    s.out << fmt::format("  private key: {} (mode 0600; keep it offline, never share it)\n",
                         key_path.string());
    s.out << fmt::format("  public key:  {} (give this to verifiers: --trust)\n",
                         pub_path.string());
    s.out << fmt::format("  key ID:      {}\n", key.public_key().FingerprintHex());
    return Ok();
  });
}

// ---- image-package ----

struct PackOptions {
  std::string directory;
  std::string destination;
  std::string signing_key;
  std::string version = "1.0.0";
  std::string image_id;
  std::string hardware_definition;
};

Result<formats::Board> LoadBoard(const fs::path& path) {
  MOAT_ASSIGN_OR_RETURN(std::string json, ReadFile(path, kMaxHardwareDefinitionBytes));
  fs::path base = path.parent_path();
  // Imports are resolved relative to the importing file's directory, as Azure Sphere does;
  // they may not leave that directory tree.
  auto loader = [base](std::string_view import_path) -> Result<std::string> {
    fs::path rel(import_path);
    if (rel.is_absolute() || rel.lexically_normal().string().starts_with("..")) {
      return Fail(ErrorCode::kInvalidArgument, "import '{}' must be a relative path inside {}",
                  import_path, base.string());
    }
    return ReadFile(base / rel, kMaxHardwareDefinitionBytes);
  };
  return formats::Board::Load(json, path.filename().string(), loader);
}

void DoPack(Streams s, int& exit_code, const PackOptions& o) {
  Run(s, exit_code, "image-package pack-application", [&]() -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(std::string key_pem, ReadFile(o.signing_key, kMaxKeyFileBytes));
    auto key = crypto::PrivateKey::FromPem(key_pem);
    if (!key) return Fail(key.error().WithContext(o.signing_key));

    MOAT_ASSIGN_OR_RETURN(PackageDirectory dir, ReadPackageDirectory(o.directory));
    auto manifest = formats::ParseAppManifest(dir.manifest_json);
    if (!manifest) {
      return Fail(
          manifest.error().WithContext((fs::path(o.directory) / "app_manifest.json").string()));
    }
    if (!o.hardware_definition.empty()) {
      MOAT_ASSIGN_OR_RETURN(formats::Board board, LoadBoard(o.hardware_definition));
      MOAT_TRY(formats::ResolvePeripherals(*manifest, board));
    }
    // The entry point must be a regular, executable file inside the package.
    std::string entry = manifest->entry_point.substr(1);
    auto it = std::find_if(dir.files.begin(), dir.files.end(),
                           [&](const auto& e) { return e.path == entry; });
    if (it == dir.files.end() || it->kind != formats::FileTreeEntry::Kind::kFile) {
      return Fail(ErrorCode::kInvalidArgument, "EntryPoint '{}' is not a regular file in {}",
                  manifest->entry_point, o.directory);
    }
    if ((it->mode & 0111) == 0) {
      return Fail(ErrorCode::kInvalidArgument, "EntryPoint '{}' is not executable (mode {:o})",
                  manifest->entry_point, it->mode);
    }

    formats::ImagePackageHeader header;
    header.image_type = formats::ImageType::kApplication;
    header.component_id = manifest->component_id;
    header.name = manifest->name;
    header.version = o.version;
    header.created = SystemClock().Now();
    if (o.image_id.empty()) {
      MOAT_ASSIGN_OR_RETURN(header.image_id, formats::Guid::Parse(SystemRandom().NewUuid()));
    } else {
      auto id = formats::Guid::Parse(o.image_id);
      if (!id) return Fail(id.error().WithContext("--image-id"));
      header.image_id = *id;
    }
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> package,
                          formats::BuildImagePackage(header, dir.manifest_json, dir.files, *key));
    MOAT_TRY(AtomicWriteFile(o.destination, package));
    s.out << fmt::format("Packed and signed {} ({} files, {} uncompressed) into {}.\n",
                         manifest->name, dir.files.size(), FormatBytes(dir.total_bytes),
                         o.destination);
    s.out << fmt::format("  component ID: {}\n", header.component_id.ToString());
    s.out << fmt::format("  image ID:     {}\n", header.image_id.ToString());
    s.out << fmt::format("  version:      {}\n", header.version);
    s.out << fmt::format("  package size: {}\n", FormatBytes(package.size()));
    s.out << fmt::format("  signed by:    {} key {}\n", crypto::KeyTypeName(key->type()),
                         key->public_key().FingerprintHex());
    return Ok();
  });
}

void PrintHeader(std::ostream& out, const formats::ImagePackageHeader& h,
                 std::string_view manifest_json, const formats::SignatureInfo& sig,
                 uint64_t package_bytes) {
  out << fmt::format("  image type:   {}\n", ImageTypeLabel(h.image_type));
  out << fmt::format("  name:         {}\n", h.name);
  out << fmt::format("  component ID: {}\n", h.component_id.ToString());
  out << fmt::format("  image ID:     {}\n", h.image_id.ToString());
  out << fmt::format("  version:      {}\n", h.version);
  out << fmt::format("  created:      {}\n", FormatRfc3339(h.created));
  out << fmt::format("  payload:      {} uncompressed\n", FormatBytes(h.payload_size));
  out << fmt::format("  package size: {}\n", FormatBytes(package_bytes));
  out << fmt::format("  signed by:    {} key {}\n", crypto::KeyTypeName(sig.algorithm),
                     HexEncode(sig.key_id));
  out << "  manifest:     " << manifest_json.size() << " bytes\n";
}

Result<std::vector<crypto::PublicKey>> LoadTrustedKeys(const std::vector<std::string>& paths) {
  std::vector<crypto::PublicKey> keys;
  for (const auto& p : paths) {
    MOAT_ASSIGN_OR_RETURN(crypto::PublicKey k, LoadTrustedKey(p));
    keys.push_back(std::move(k));
  }
  return keys;
}

void DoShow(Streams s, int& exit_code, const std::string& file,
            const std::vector<std::string>& trust, bool list_files) {
  Run(s, exit_code, "image-package show", [&]() -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(file, kMaxPackageBytes));
    if (trust.empty()) {
      // Display only: nothing shown here has been verified, and we say so first.
      auto info = formats::InspectUnverifiedImagePackage(bytes);
      if (!info) return Fail(info.error().WithContext(file));
      s.out << fmt::format(
          "{}: image package (signature NOT verified; pass --trust KEY to "
          "verify)\n",
          file);
      PrintHeader(s.out, info->header, info->manifest_json, info->signature, bytes.size());
      s.out << "\n" << info->manifest_json << "\n";
      return Ok();
    }
    MOAT_ASSIGN_OR_RETURN(std::vector<crypto::PublicKey> keys, LoadTrustedKeys(trust));
    auto pkg = formats::VerifyImagePackage(bytes, keys);
    if (!pkg) return Fail(pkg.error().WithContext(file));
    s.out << fmt::format("{}: image package (signature verified)\n", file);
    PrintHeader(s.out, pkg->header(), pkg->manifest_json(), pkg->signature(), bytes.size());
    if (list_files) {
      MOAT_ASSIGN_OR_RETURN(auto files, pkg->Files());
      s.out << "  files:\n";
      for (const auto& f : files) {
        switch (f.kind) {
          case formats::FileTreeEntry::Kind::kDirectory:
            s.out << fmt::format("    {:04o} {}/\n", f.mode, f.path);
            break;
          case formats::FileTreeEntry::Kind::kFile:
            s.out << fmt::format("    {:04o} {} ({} bytes)\n", f.mode, f.path, f.data.size());
            break;
          case formats::FileTreeEntry::Kind::kSymlink:
            s.out << fmt::format("         {} -> {}\n", f.path, f.link_target);
            break;
        }
      }
    }
    s.out << "\n" << pkg->manifest_json() << "\n";
    return Ok();
  });
}

void DoVerify(Streams s, int& exit_code, const std::string& file,
              const std::vector<std::string>& trust) {
  Run(s, exit_code, "image-package verify", [&]() -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(std::vector<crypto::PublicKey> keys, LoadTrustedKeys(trust));
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(file, kMaxPackageBytes));
    auto pkg = formats::VerifyImagePackage(bytes, keys);
    if (!pkg) return Fail(pkg.error().WithContext(file));
    // A valid signature over an invalid manifest or tree is still a bad package.
    auto manifest = formats::ParseAppManifest(pkg->manifest_json());
    if (pkg->header().image_type == formats::ImageType::kApplication) {
      if (!manifest) return Fail(manifest.error().WithContext(file));
      if (manifest->component_id != pkg->header().component_id) {
        return Fail(ErrorCode::kVerificationFailed,
                    "{}: header component ID {} does not match the manifest's {}", file,
                    pkg->header().component_id.ToString(), manifest->component_id.ToString());
      }
    }
    auto files = pkg->Files();
    if (!files) return Fail(files.error().WithContext(file));
    s.out << fmt::format(
        "{}: OK — signature verified ({} key {}), {} {} {} version {}, {} "
        "files\n",
        file, crypto::KeyTypeName(pkg->signature().algorithm), HexEncode(pkg->signature().key_id),
        ImageTypeLabel(pkg->header().image_type), pkg->header().name,
        pkg->header().image_id.ToString(), pkg->header().version, files->size());
    return Ok();
  });
}

// ---- manifest ----

std::string DescribeCapabilities(const Json& caps) {
  std::string out;
  for (auto it = caps.begin(); it != caps.end(); ++it) {
    out += fmt::format("    {}: {}\n", it.key(), DumpJson(it.value()));
  }
  return out.empty() ? "    (none: the app may use nothing beyond its own code)\n" : out;
}

void DoManifestCheck(Streams s, int& exit_code, const std::string& file,
                     const std::string& hardware_definition) {
  Run(s, exit_code, "manifest check", [&]() -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(std::string json, ReadFile(file, kMaxManifestFileBytes));
    auto manifest = formats::ParseAppManifest(json);
    if (!manifest) return Fail(manifest.error().WithContext(file));
    std::vector<std::string> unresolved;
    auto collect = [&](const std::vector<formats::PeripheralRef>& refs) {
      for (const auto& r : refs) {
        if (r.IsConstant()) unresolved.push_back(r.ToString());
      }
    };
    const auto& c = manifest->capabilities;
    for (const auto* list : {&c.gpio, &c.uart, &c.i2c_master, &c.spi_master, &c.pwm, &c.adc}) {
      collect(*list);
    }
    formats::AppManifest shown = *manifest;
    if (!hardware_definition.empty()) {
      MOAT_ASSIGN_OR_RETURN(formats::Board board, LoadBoard(hardware_definition));
      auto resolved = formats::ResolvePeripherals(*manifest, board);
      if (!resolved) return Fail(resolved.error().WithContext(file));
      shown = *resolved;
    }
    s.out << fmt::format("{}: valid app manifest\n", file);
    s.out << fmt::format("  name:             {}\n", shown.name);
    s.out << fmt::format("  component ID:     {}\n", shown.component_id.ToString());
    s.out << fmt::format("  application type: {}\n",
                         shown.application_type == formats::ApplicationType::kRealTimeCapable
                             ? "RealTimeCapable"
                             : "Default");
    s.out << fmt::format("  entry point:      {}\n", shown.entry_point);
    s.out << "  capabilities:\n" << DescribeCapabilities(formats::ToJson(shown)["Capabilities"]);
    if (!unresolved.empty()) {
      if (hardware_definition.empty()) {
        s.out << fmt::format(
            "  peripheral constants not resolved (pass --hardware-definition): "
            "{}\n",
            fmt::join(unresolved, ", "));
      } else {
        s.out << fmt::format("  resolved {} peripheral constant(s) against {}\n", unresolved.size(),
                             hardware_definition);
      }
    }
    return Ok();
  });
}

}  // namespace

void RegisterKeygen(CLI::App& app, Streams s, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "keygen",
      "Create an image-signing key pair: NAME.key (private, mode 0600) and NAME.pub.\n"
      "Example: moat keygen --destination release-signing --type ecdsa-p256");
  auto type = std::make_shared<std::string>("ecdsa-p256");
  auto dest = std::make_shared<std::string>();
  cmd->add_option("--type", *type, "Key algorithm: ecdsa-p256 or ed25519")
      ->check(CLI::IsMember({"ecdsa-p256", "ed25519"}))
      ->capture_default_str();
  cmd->add_option("--destination,-d", *dest, "Path prefix for NAME.key and NAME.pub")->required();
  cmd->callback([s, &exit_code, type, dest] { DoKeygen(s, exit_code, *type, *dest); });
}

void RegisterImagePackage(CLI::App& app, Streams s, int& exit_code) {
  auto* group =
      app.add_subcommand("image-package", "Pack, inspect and verify signed image packages");
  group->require_subcommand(1);

  auto pack = std::make_shared<PackOptions>();
  auto* p = group->add_subcommand(
      "pack-application",
      "Pack an application directory (app_manifest.json plus the files it runs) into a signed\n"
      "image package. The manifest is checked, the entry point must be an executable file.\n"
      "Example: moat image-package pack-application --package-directory out/app \\\n"
      "           --destination app.imagepackage --signing-key release-signing.key");
  p->add_option("--package-directory", pack->directory, "Directory holding app_manifest.json")
      ->required()
      ->check(CLI::ExistingDirectory);
  p->add_option("--destination", pack->destination, "Image package file to write")->required();
  p->add_option("--signing-key", pack->signing_key, "Private image-signing key (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  p->add_option("--version", pack->version, "Image version: 1 to 4 dot-separated numbers")
      ->capture_default_str();
  p->add_option("--image-id", pack->image_id, "Image ID (GUID); random when omitted");
  p->add_option("--hardware-definition", pack->hardware_definition,
                "Hardware definition that must resolve the manifest's peripheral constants")
      ->check(CLI::ExistingFile);
  p->callback([s, &exit_code, pack] { DoPack(s, exit_code, *pack); });

  auto show_file = std::make_shared<std::string>();
  auto show_trust = std::make_shared<std::vector<std::string>>();
  auto show_files = std::make_shared<bool>(false);
  auto* show = group->add_subcommand(
      "show",
      "Show an image package's header and manifest. Without --trust the contents are shown\n"
      "unverified (and labelled so); with --trust the signature is checked first.");
  show->add_option("file", *show_file, "Image package")->required()->check(CLI::ExistingFile);
  show->add_option("--trust", *show_trust, "Trusted public key or certificate (PEM); repeatable")
      ->check(CLI::ExistingFile);
  show->add_flag("--files", *show_files, "List the files (needs --trust)");
  show->callback([s, &exit_code, show_file, show_trust, show_files] {
    DoShow(s, exit_code, *show_file, *show_trust, *show_files);
  });

  auto verify_file = std::make_shared<std::string>();
  auto verify_trust = std::make_shared<std::vector<std::string>>();
  auto* verify = group->add_subcommand(
      "verify",
      "Verify an image package: its signature by one of the trusted keys, then its header,\n"
      "manifest and file tree. Exit 0 if valid, 1 if not (the reason is printed).");
  verify->add_option("file", *verify_file, "Image package")->required()->check(CLI::ExistingFile);
  verify
      ->add_option("--trust", *verify_trust, "Trusted public key or certificate (PEM); repeatable")
      ->required()
      ->check(CLI::ExistingFile);
  verify->callback([s, &exit_code, verify_file, verify_trust] {
    DoVerify(s, exit_code, *verify_file, *verify_trust);
  });
}

void RegisterManifest(CLI::App& app, Streams s, int& exit_code) {
  auto* group = app.add_subcommand("manifest", "Check app manifests (app_manifest.json)");
  group->require_subcommand(1);
  auto file = std::make_shared<std::string>();
  auto hw = std::make_shared<std::string>();
  auto* check = group->add_subcommand(
      "check",
      "Check an app_manifest.json against the Azure Sphere schema (as Moat accepts it) and\n"
      "print what the app is allowed to do. With --hardware-definition, $NAME peripheral\n"
      "constants are resolved against the board.\n"
      "Example: moat manifest check app_manifest.json --hardware-definition board.json");
  check->add_option("file", *file, "app_manifest.json")->required()->check(CLI::ExistingFile);
  check->add_option("--hardware-definition", *hw, "Board hardware definition (JSON)")
      ->check(CLI::ExistingFile);
  check->callback([s, &exit_code, file, hw] { DoManifestCheck(s, exit_code, *file, *hw); });
}

}  // namespace moat::cli

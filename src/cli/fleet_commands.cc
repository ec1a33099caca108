// moat product, device-group, image-signing-key, image and deployment; moat device update and
// show-deployment-status.
#include <fmt/format.h>

#include <charconv>

#include "cli/online_commands.h"
#include "cli/session.h"
#include "core/encoding.h"
#include "core/file.h"
#include "crypto/digest.h"

namespace moat::cli {
namespace {

// The service's limit on an image package (FleetApi::kMaxImagePackageBytes).
constexpr size_t kMaxImagePackageBytes = size_t{64} << 20;

std::string TenantPath(const std::string& tenant, std::string_view rest) {
  return "/api/v1/tenants/" + EncodeQueryValue(tenant) + std::string(rest);
}

std::string ProductPath(const std::string& tenant, const std::string& product) {
  return TenantPath(tenant, "/products/" + EncodeQueryValue(product));
}

std::string GroupPath(const std::string& tenant, const std::string& product,
                      const std::string& group) {
  std::string path = ProductPath(tenant, product) + "/device-groups";
  if (!group.empty()) path += "/" + EncodeQueryValue(group);
  return path;
}

// "02-05" -> [2, 5].
Result<std::pair<int, int>> ParseHours(const std::string& text) {
  const size_t dash = text.find('-');
  int start = -1, end = -1;
  auto number = [](std::string_view s, int& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
  };
  if (dash == std::string::npos || !number(std::string_view(text).substr(0, dash), start) ||
      !number(std::string_view(text).substr(dash + 1), end)) {
    return Fail(ErrorCode::kInvalidArgument,
                "--update-hours '{}' is not START-END in whole hours, e.g. 02-05", text);
  }
  return std::pair{start, end};
}

// "Sat,Sun" -> ["Sat","Sun"] (the service checks the names).
Json ParseDays(const std::string& text) {
  Json days = Json::array();
  size_t i = 0;
  while (i <= text.size()) {
    size_t comma = text.find(',', i);
    if (comma == std::string::npos) comma = text.size();
    std::string day = text.substr(i, comma - i);
    if (!day.empty()) days.push_back(day);
    i = comma + 1;
  }
  return days;
}

void PrintFields(std::ostream& out, const Json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) out << fmt::format("{:<20} {}\n", std::string(k) + ":", Str(j, k));
}

std::string WindowText(const Json& g) {
  const auto it = g.find("update_window");
  if (it == g.end() || it->is_null()) return "none (any time)";
  return Str(*it, "summary");
}

}  // namespace

// Installed (as the device last reported) versus targeted (its group's newest deployment).
void PrintDeploymentStatus(std::ostream& out, const Json& st) {
  const Json& dep = st["deployment"];
  out << fmt::format("{:<30} {}\n", "deployment:",
                     dep.is_null()
                         ? std::string("- (no deployment to its device group)")
                         : fmt::format("{} (targets version {}, {})", Str(dep, "id"),
                                       Str(dep, "targets_version"), Str(dep, "created_at")));
  out << fmt::format("{:<30} {}\n", "status_reported_at:",
                     st["reported_at"].is_null() ? "- (never reported)" : Str(st, "reported_at"));
  if (!st["os"].is_null()) {
    out << fmt::format("{:<30} {} {}\n", "reported_os:", Str(st["os"], "name"),
                       Str(st["os"], "version"));
  }
  if (!st["last_update"].is_null()) {
    const Json& u = st["last_update"];
    out << fmt::format("{:<30} {} at {} (targets version {}) {}\n",
                       "last_update:", Str(u, "result"), Str(u, "at"), Str(u, "targets_version"),
                       Str(u, "detail"));
  }
  out << fmt::format("{:<30} {}\n", "up_to_date:", Str(st, "up_to_date"));
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : st["targeted_images"]) {
    rows.push_back({"targeted", Str(t, "component_id"), Str(t, "name"), Str(t, "version"),
                    Str(t, "id"), t.value("installed", false) ? "installed" : "pending"});
  }
  for (const auto& i : st["installed_images"]) {
    if (i.value("targeted", false)) continue;
    rows.push_back({"installed", Str(i, "component_id"), "-", Str(i, "version"), Str(i, "image_id"),
                    "not targeted"});
  }
  if (!rows.empty()) {
    out << "\n";
    PrintTable(out, {"KIND", "COMPONENT", "NAME", "VERSION", "IMAGE ID", "STATE"}, rows);
  }
}

void RegisterFleet(CLI::App& app, Streams s, int& exit_code, std::shared_ptr<GlobalOptions> g) {
  auto json_out = [s](const Json& j) { s.out << j.dump(2) << "\n"; };
  struct Options {
    std::string tenant, name, new_name, description, product, group, os_feed, policy, days, hours,
        file, destination, id;
    std::vector<std::string> images;
    bool no_window = false, no_group = false;
  };
  auto o = std::make_shared<Options>();

  // ---- product create|list|show|update|delete
  auto* product = app.add_subcommand(
      "product",
      "Products: what a tenant makes. Each has device groups (Development, Field Test and\n"
      "Production are created with it) that decide what its devices receive.");
  product->require_subcommand(1);
  auto* p_create = product->add_subcommand(
      "create", "Create a product and its default device groups (Contributor)");
  p_create->add_option("name", o->name, "Product name")->required();
  p_create->add_option("--tenant", o->tenant, "Tenant name")->required();
  p_create->add_option("--description", o->description, "What the product is");
  p_create->callback([=, &exit_code] {
    Run(s, exit_code, "product create", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"name", o->name}};
      if (!o->description.empty()) body["description"] = o->description;
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("POST", TenantPath(o->tenant, "/products"), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::string groups;
      for (const auto& name : j["device_groups"]) {
        groups += (groups.empty() ? "" : ", ") + name.get<std::string>();
      }
      s.out << fmt::format("Created product {} ({}) with device groups {}.\n", Str(j, "name"),
                           Str(j, "id"), groups);
      return Ok();
    });
  });
  auto* p_list = product->add_subcommand("list", "List a tenant's products");
  p_list->add_option("--tenant", o->tenant, "Tenant name")->required();
  p_list->callback([=, &exit_code] {
    Run(s, exit_code, "product list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", TenantPath(o->tenant, "/products")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& p : j["products"]) {
        rows.push_back({Str(p, "name"), Str(p, "device_count"), Str(p, "description")});
      }
      PrintTable(s.out, {"NAME", "DEVICES", "DESCRIPTION"}, rows);
      return Ok();
    });
  });
  auto* p_show = product->add_subcommand("show", "Show a product and its device groups");
  p_show->add_option("name", o->name, "Product name")->required();
  p_show->add_option("--tenant", o->tenant, "Tenant name")->required();
  p_show->callback([=, &exit_code] {
    Run(s, exit_code, "product show", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", ProductPath(o->tenant, o->name)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      PrintFields(
          s.out, j,
          {"name", "id", "tenant", "description", "device_count", "created_at", "created_by"});
      s.out << "\n";
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : j["device_groups"]) {
        rows.push_back({Str(d, "name"), Str(d, "os_feed"), Str(d, "app_update_policy"),
                        WindowText(d), Str(d, "device_count")});
      }
      PrintTable(s.out, {"DEVICE GROUP", "OS FEED", "APP UPDATES", "UPDATE WINDOW", "DEVICES"},
                 rows);
      return Ok();
    });
  });
  auto* p_update = product->add_subcommand("update", "Rename a product or change its description");
  p_update->add_option("name", o->name, "Product name")->required();
  p_update->add_option("--tenant", o->tenant, "Tenant name")->required();
  p_update->add_option("--name", o->new_name, "New name");
  p_update->add_option("--description", o->description, "New description");
  p_update->callback([=, &exit_code] {
    Run(s, exit_code, "product update", [&]() -> Result<void> {
      Json body = Json::object();
      if (!o->new_name.empty()) body["name"] = o->new_name;
      if (p_update->count("--description") > 0) body["description"] = o->description;
      if (body.empty()) {
        return Fail(ErrorCode::kInvalidArgument, "nothing to change: give --name or --description");
      }
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("PATCH", ProductPath(o->tenant, o->name), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Updated product {}.\n", Str(j, "name"));
      return Ok();
    });
  });
  auto* p_delete = product->add_subcommand(
      "delete",
      "Delete a product and its device groups (Administrator); refused while devices are in\n"
      "any of its groups");
  p_delete->add_option("name", o->name, "Product name")->required();
  p_delete->add_option("--tenant", o->tenant, "Tenant name")->required();
  p_delete->callback([=, &exit_code] {
    Run(s, exit_code, "product delete", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("DELETE", ProductPath(o->tenant, o->name)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Deleted product {}.\n", Str(j, "name"));
      return Ok();
    });
  });

  // ---- device-group create|list|show|update|delete
  auto* group = app.add_subcommand(
      "device-group",
      "Device groups of a product: the OS feed, whether third-party app updates are applied,\n"
      "and when devices may update (days and hours, device-local time).");
  group->require_subcommand(1);
  // The settings create and update share.
  auto add_settings = [o](CLI::App* cmd) {
    cmd->add_option("--description", o->description, "What the group is for");
    cmd->add_option("--os-feed", o->os_feed, "Retail or RetailEval")
        ->check(CLI::IsMember({"Retail", "RetailEval"}));
    cmd->add_option("--app-update-policy", o->policy, "update-all or no-third-party-app-updates")
        ->check(CLI::IsMember({"update-all", "no-third-party-app-updates"}));
    auto* days = cmd->add_option("--update-days", o->days,
                                 "Update window days, e.g. Sat,Sun (with --update-hours)");
    auto* hours = cmd->add_option("--update-hours", o->hours,
                                  "Update window hours START-END, device-local, e.g. 02-05");
    days->needs(hours);
    hours->needs(days);
  };
  // The JSON body for create/update from the options given.
  auto settings_body = [o](CLI::App* cmd) -> Result<Json> {
    Json body = Json::object();
    if (cmd->count("--description") > 0) body["description"] = o->description;
    if (!o->os_feed.empty()) body["os_feed"] = o->os_feed;
    if (!o->policy.empty()) body["app_update_policy"] = o->policy;
    if (!o->days.empty()) {
      MOAT_ASSIGN_OR_RETURN(auto hours, ParseHours(o->hours));
      body["update_window"] = {
          {"days", ParseDays(o->days)}, {"start_hour", hours.first}, {"end_hour", hours.second}};
    }
    return body;
  };
  auto add_scope = [o](CLI::App* cmd) {
    cmd->add_option("--product", o->product, "Product name")->required();
    cmd->add_option("--tenant", o->tenant, "Tenant name")->required();
  };
  auto print_group = [s](const Json& j) {
    PrintFields(s.out, j, {"name", "product", "id", "description", "os_feed", "app_update_policy"});
    s.out << fmt::format("{:<20} {}\n", "update_window:", WindowText(j));
    PrintFields(s.out, j, {"device_count", "created_at"});
  };

  auto* g_create = group->add_subcommand(
      "create",
      "Create a device group (Contributor). Defaults: --os-feed Retail, --app-update-policy\n"
      "update-all, no update window.");
  g_create->add_option("name", o->name, "Device group name")->required();
  add_scope(g_create);
  add_settings(g_create);
  g_create->callback([=, &exit_code] {
    Run(s, exit_code, "device-group create", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Json body, settings_body(g_create));
      body["name"] = o->name;
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("POST", GroupPath(o->tenant, o->product, ""), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Created device group {}/{}.\n", Str(j, "product"), Str(j, "name"));
      print_group(j);
      return Ok();
    });
  });
  auto* g_list = group->add_subcommand("list", "List a product's device groups");
  add_scope(g_list);
  g_list->callback([=, &exit_code] {
    Run(s, exit_code, "device-group list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", GroupPath(o->tenant, o->product, "")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : j["device_groups"]) {
        rows.push_back({Str(d, "name"), Str(d, "os_feed"), Str(d, "app_update_policy"),
                        WindowText(d), Str(d, "device_count")});
      }
      PrintTable(s.out, {"NAME", "OS FEED", "APP UPDATES", "UPDATE WINDOW", "DEVICES"}, rows);
      return Ok();
    });
  });
  auto* g_show = group->add_subcommand("show", "Show a device group");
  g_show->add_option("name", o->name, "Device group name")->required();
  add_scope(g_show);
  g_show->callback([=, &exit_code] {
    Run(s, exit_code, "device-group show", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", GroupPath(o->tenant, o->product, o->name)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      print_group(j);
      return Ok();
    });
  });
  auto* g_update = group->add_subcommand("update", "Change a device group (Contributor)");
  g_update->add_option("name", o->name, "Device group name")->required();
  add_scope(g_update);
  g_update->add_option("--name", o->new_name, "New name");
  add_settings(g_update);
  auto* no_window =
      g_update->add_flag("--no-update-window", o->no_window, "Remove the update window");
  no_window->excludes("--update-days");
  g_update->callback([=, &exit_code] {
    Run(s, exit_code, "device-group update", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Json body, settings_body(g_update));
      if (!o->new_name.empty()) body["name"] = o->new_name;
      if (o->no_window) body["update_window"] = nullptr;
      if (body.empty()) {
        return Fail(ErrorCode::kInvalidArgument,
                    "nothing to change: give --name, --description, --os-feed, "
                    "--app-update-policy, --update-days/--update-hours or --no-update-window");
      }
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("PATCH", GroupPath(o->tenant, o->product, o->name), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Updated device group {}/{}.\n", Str(j, "product"), Str(j, "name"));
      print_group(j);
      return Ok();
    });
  });
  auto* g_delete = group->add_subcommand(
      "delete", "Delete a device group (Administrator); refused while it has devices");
  g_delete->add_option("name", o->name, "Device group name")->required();
  add_scope(g_delete);
  g_delete->callback([=, &exit_code] {
    Run(s, exit_code, "device-group delete", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("DELETE", GroupPath(o->tenant, o->product, o->name)));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Deleted device group {}/{}.\n", Str(j, "product"), Str(j, "name"));
      return Ok();
    });
  });

  auto* g_rotate = group->add_subcommand(
      "rotate-root",
      "Replace the root key of a device group's update repository (Administrator). The new\n"
      "root version is signed by the old and the new key, so devices follow it.");
  g_rotate->add_option("name", o->name, "Device group name")->required();
  add_scope(g_rotate);
  g_rotate->callback([=, &exit_code] {
    Run(s, exit_code, "device-group rotate-root", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json empty = Json::object();
      MOAT_ASSIGN_OR_RETURN(
          Json j,
          session.Call("POST", GroupPath(o->tenant, o->product, o->name) + "/rotate-root", &empty));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::string retired;
      for (const auto& k : j["retired_root_keyids"]) {
        retired += (retired.empty() ? "" : ", ") + k.get<std::string>();
      }
      s.out << fmt::format(
          "Rotated the root of {}/{}: root version {} is signed by the retired key {} and the "
          "new key {}.\n",
          Str(j, "product"), Str(j, "device_group"), Str(j, "root_version"), retired,
          Str(j, "new_root_keyid"));
      return Ok();
    });
  });

  // ---- deployment create|list|show
  auto* deployment = app.add_subcommand(
      "deployment",
      "Deployments: the images a device group's devices are to run, published as a new signed\n"
      "targets version of the group's update repository (TUF).");
  deployment->require_subcommand(1);
  auto* dep_create = deployment->add_subcommand(
      "create",
      "Deploy images to a device group (Contributor): one image per component; the newest\n"
      "deployment is what the group's devices install");
  dep_create->add_option("--tenant", o->tenant, "Tenant name")->required();
  dep_create
      ->add_option("--device-group", o->group, "PRODUCT/GROUP, e.g. \"Thermostat/Field Test\"")
      ->required();
  dep_create->add_option("--images", o->images, "Image IDs (moat image list)")->required();
  dep_create->callback([=, &exit_code] {
    Run(s, exit_code, "deployment create", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json body = {{"device_group", o->group}, {"images", o->images}};
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("POST", TenantPath(o->tenant, "/deployments"), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Created deployment {} to {}/{}: targets version {}, {} image(s).\n",
                           Str(j, "id"), Str(j, "product"), Str(j, "device_group"),
                           Str(j, "targets_version"), Str(j, "image_count"));
      return Ok();
    });
  });
  auto* dep_list = deployment->add_subcommand("list", "List deployments, newest first");
  dep_list->add_option("--tenant", o->tenant, "Tenant name")->required();
  dep_list->add_option("--device-group", o->group, "Only this PRODUCT/GROUP");
  dep_list->callback([=, &exit_code] {
    Run(s, exit_code, "deployment list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      std::string path = TenantPath(o->tenant, "/deployments");
      if (!o->group.empty()) path += "?device_group=" + EncodeQueryValue(o->group);
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", path));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : j["deployments"]) {
        rows.push_back({Str(d, "id"), Str(d, "product") + "/" + Str(d, "device_group"),
                        Str(d, "targets_version"), Str(d, "image_count"), Str(d, "created_at"),
                        Str(d, "created_by")});
      }
      PrintTable(s.out, {"ID", "DEVICE GROUP", "TARGETS VERSION", "IMAGES", "CREATED", "BY"}, rows);
      return Ok();
    });
  });
  auto* dep_show = deployment->add_subcommand("show", "Show a deployment and its images");
  dep_show->add_option("id", o->id, "Deployment ID")->required();
  dep_show->add_option("--tenant", o->tenant, "Tenant name")->required();
  dep_show->callback([=, &exit_code] {
    Run(s, exit_code, "deployment show", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j,
          session.Call("GET", TenantPath(o->tenant, "/deployments/" + EncodeQueryValue(o->id))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      PrintFields(s.out, j,
                  {"id", "tenant", "product", "device_group", "device_group_id", "targets_version",
                   "image_count", "created_at", "created_by", "repository"});
      s.out << "\n";
      std::vector<std::vector<std::string>> rows;
      for (const auto& i : j["images"]) {
        rows.push_back({Str(i, "component_id"), Str(i, "image_type"), Str(i, "name"),
                        Str(i, "version"), Str(i, "id")});
      }
      PrintTable(s.out, {"COMPONENT", "TYPE", "NAME", "VERSION", "IMAGE ID"}, rows);
      return Ok();
    });
  });

  // ---- device update (added to the `device` command of online_commands.cc)
  CLI::App* device = nullptr;
  try {
    device = app.get_subcommand("device");
  } catch (const CLI::OptionNotFound&) {
    // RegisterOnline was not called: there is no `device` command to extend.
  }
  if (device != nullptr) {
    auto* d_update =
        device->add_subcommand("update", "Move a device to a device group (Contributor)");
    d_update->add_option("id", o->id, "Device ID")->required();
    d_update->add_option("--tenant", o->tenant, "Tenant name")->required();
    auto* to = d_update->add_option("--device-group", o->group,
                                    "PRODUCT/GROUP, e.g. \"Thermostat/Field Test\"");
    auto* none =
        d_update->add_flag("--no-device-group", o->no_group, "Take the device out of its group");
    to->excludes(none);
    d_update->callback([=, &exit_code] {
      Run(s, exit_code, "device update", [&]() -> Result<void> {
        if (o->group.empty() && !o->no_group) {
          return Fail(ErrorCode::kInvalidArgument,
                      "give --device-group PRODUCT/GROUP or --no-device-group");
        }
        Json body = {{"device_group", o->no_group ? Json(nullptr) : Json(o->group)}};
        MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
        MOAT_ASSIGN_OR_RETURN(
            Json j,
            session.Call("PATCH", TenantPath(o->tenant, "/devices/" + EncodeQueryValue(o->id)),
                         &body));
        if (g->output == OutputFormat::kJson) return json_out(j), Ok();
        if (j["device_group"].is_null()) {
          s.out << fmt::format("Device {} is in no device group now.\n", Str(j, "id"));
        } else {
          s.out << fmt::format("Device {} is in {}/{} now.\n", Str(j, "id"), Str(j, "product"),
                               Str(j, "device_group"));
        }
        return Ok();
      });
    });
  }

  if (device != nullptr) {
    auto* d_status = device->add_subcommand(
        "show-deployment-status",
        "What a device runs (as it last reported) against what its device group's newest\n"
        "deployment targets");
    d_status->add_option("id", o->id, "Device ID")->required();
    d_status->add_option("--tenant", o->tenant, "Tenant name")->required();
    d_status->callback([=, &exit_code] {
      Run(s, exit_code, "device show-deployment-status", [&]() -> Result<void> {
        MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
        MOAT_ASSIGN_OR_RETURN(
            Json j,
            session.Call("GET", TenantPath(o->tenant, "/devices/" + EncodeQueryValue(o->id) +
                                                          "/deployment-status")));
        if (g->output == OutputFormat::kJson) return json_out(j), Ok();
        s.out << fmt::format("{:<30} {}\n", "id:", Str(j, "device_id"));
        s.out << fmt::format("{:<30} {}\n", "device_group:",
                             j["device_group"].is_null()
                                 ? std::string("-")
                                 : Str(j, "product") + "/" + Str(j, "device_group"));
        PrintDeploymentStatus(s.out, j);
        return Ok();
      });
    });
  }

  // ---- image-signing-key add|list|revoke
  auto* key = app.add_subcommand(
      "image-signing-key",
      "The public keys a tenant's image packages must be signed with (moat keygen makes a\n"
      "pair; moat image-package pack-application signs with the private half).");
  key->require_subcommand(1);
  auto* k_add = key->add_subcommand("add", "Trust an image-signing key (Administrator)");
  k_add->add_option("--tenant", o->tenant, "Tenant name")->required();
  k_add->add_option("--public-key", o->file, "Public key (PEM; ECDSA P-256 or Ed25519)")
      ->required()
      ->check(CLI::ExistingFile);
  k_add->add_option("--name", o->name, "A name for the key (default: key-<first 12 hex of ID>)");
  k_add->callback([=, &exit_code] {
    Run(s, exit_code, "image-signing-key add", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string pem, ReadFile(o->file, 8 * 1024));
      Json body = {{"public_key", pem}};
      if (!o->name.empty()) body["name"] = o->name;
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("POST", TenantPath(o->tenant, "/image-signing-keys"), &body));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Added image-signing key {} ({}, {}).\n", Str(j, "name"),
                           Str(j, "algorithm"), Str(j, "id"));
      return Ok();
    });
  });
  auto* k_list = key->add_subcommand("list", "List a tenant's image-signing keys");
  k_list->add_option("--tenant", o->tenant, "Tenant name")->required();
  k_list->callback([=, &exit_code] {
    Run(s, exit_code, "image-signing-key list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j,
                            session.Call("GET", TenantPath(o->tenant, "/image-signing-keys")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& k : j["image_signing_keys"]) {
        rows.push_back({Str(k, "name"), Str(k, "id"), Str(k, "algorithm"), Str(k, "status"),
                        Str(k, "created_at")});
      }
      PrintTable(s.out, {"NAME", "ID", "ALGORITHM", "STATUS", "ADDED"}, rows);
      return Ok();
    });
  });
  auto* k_revoke = key->add_subcommand(
      "revoke",
      "Stop trusting an image-signing key (Administrator): packages it signed are refused from\n"
      "now on; images already added stay.");
  k_revoke->add_option("key", o->id, "Key ID or name")->required();
  k_revoke->add_option("--tenant", o->tenant, "Tenant name")->required();
  k_revoke->callback([=, &exit_code] {
    Run(s, exit_code, "image-signing-key revoke", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      Json empty = Json::object();
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("POST",
                               TenantPath(o->tenant, "/image-signing-keys/" +
                                                         EncodeQueryValue(o->id) + "/revoke"),
                               &empty));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("Revoked image-signing key {} ({}).\n", Str(j, "name"), Str(j, "id"));
      return Ok();
    });
  });

  // ---- image add|list|show|download
  auto* image = app.add_subcommand(
      "image",
      "A tenant's images: signed image packages, stored once by content. The image ID is the\n"
      "SHA-256 of the package file, the digest a device measures when it installs it.");
  image->require_subcommand(1);
  auto* i_add = image->add_subcommand(
      "add",
      "Upload a signed image package (Contributor). It is accepted only if it verifies against\n"
      "one of the tenant's image-signing keys; an app image also becomes an attestation\n"
      "reference value. Adding the same file again returns the same ID.");
  i_add->add_option("file", o->file, "Image package file")->required()->check(CLI::ExistingFile);
  i_add->add_option("--tenant", o->tenant, "Tenant name")->required();
  i_add->callback([=, &exit_code] {
    Run(s, exit_code, "image add", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(o->file, kMaxImagePackageBytes));
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Upload(TenantPath(o->tenant, "/images"), bytes,
                                                   "application/octet-stream"));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      s.out << fmt::format("{} image {}\n",
                           j.value("created", false) ? "Added" : "Already present:", Str(j, "id"));
      PrintFields(s.out, j,
                  {"image_type", "component_id", "name", "version", "size", "signer_key_name"});
      return Ok();
    });
  });
  auto* i_list = image->add_subcommand("list", "List a tenant's images");
  i_list->add_option("--tenant", o->tenant, "Tenant name")->required();
  i_list->callback([=, &exit_code] {
    Run(s, exit_code, "image list", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(Json j, session.Call("GET", TenantPath(o->tenant, "/images")));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      std::vector<std::vector<std::string>> rows;
      for (const auto& i : j["images"]) {
        rows.push_back({Str(i, "id"), Str(i, "image_type"), Str(i, "component_id"), Str(i, "name"),
                        Str(i, "version"), Str(i, "size")});
      }
      PrintTable(s.out, {"IMAGE ID", "TYPE", "COMPONENT ID", "NAME", "VERSION", "BYTES"}, rows);
      return Ok();
    });
  });
  auto* i_show = image->add_subcommand("show", "Show an image's metadata");
  i_show->add_option("id", o->id, "Image ID")->required();
  i_show->add_option("--tenant", o->tenant, "Tenant name")->required();
  i_show->callback([=, &exit_code] {
    Run(s, exit_code, "image show", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(
          Json j, session.Call("GET", TenantPath(o->tenant, "/images/" + EncodeQueryValue(o->id))));
      if (g->output == OutputFormat::kJson) return json_out(j), Ok();
      PrintFields(
          s.out, j,
          {"id", "tenant", "image_type", "component_id", "package_image_id", "name", "version",
           "size", "signer_key_name", "signer_key_id", "created_at", "created_by"});
      return Ok();
    });
  });
  auto* i_download = image->add_subcommand("download", "Download an image package");
  i_download->add_option("id", o->id, "Image ID")->required();
  i_download->add_option("--tenant", o->tenant, "Tenant name")->required();
  i_download->add_option("--destination", o->destination, "File to write (must not exist)")
      ->required();
  i_download->callback([=, &exit_code] {
    Run(s, exit_code, "image download", [&]() -> Result<void> {
      MOAT_ASSIGN_OR_RETURN(Session session, Session::Open(*g));
      MOAT_ASSIGN_OR_RETURN(std::string bytes,
                            session.Download(TenantPath(
                                o->tenant, "/images/" + EncodeQueryValue(o->id) + "/content")));
      // The ID is the content's hash, so the download checks itself.
      const std::string got = HexEncode(crypto::Sha256(bytes));
      if (got != o->id) {
        return Fail(ErrorCode::kVerificationFailed,
                    "the downloaded package has SHA-256 {}, not the image ID {}", got, o->id);
      }
      MOAT_TRY(AtomicWriteFile(o->destination, bytes, {.mode = 0644, .exclusive = true}));
      s.out << fmt::format("Wrote {} ({} bytes, sha256 verified).\n", o->destination, bytes.size());
      return Ok();
    });
  });
}

}  // namespace moat::cli

# Component (library) definitions with enforced layering.
#
# Every folder under src/ is one component with a layer number. A component may link
# (and #include) only components on a strictly lower layer, and only those it declares.
# Because a dependency must be declared before it is used and must sit on a lower
# layer, a cycle cannot be expressed: the configure step fails instead.
#
#   layer 0  core
#   layer 1  crypto
#   layer 2  formats, rot, store, net
#   layer 3  device_*, service_*    (never each other: they meet in formats and crypto);
#            sub-layers 3.1, 3.2 ... order the parts of one side (sandbox < supervisor)
#   layer 4  cli, apps
#
# Note: docs/architecture.md draws formats beside crypto on layer 1 while letting it use
# crypto; we put formats on layer 2 so that "lower layer only" holds with no exceptions.

set(MOAT_COMPONENTS "" CACHE INTERNAL "")

# moat_component(NAME LAYER n [SOURCES ...] [DEPENDS comp...] [LIBS third-party...])
function(moat_component name)
  cmake_parse_arguments(ARG "" "LAYER" "SOURCES;DEPENDS;LIBS" ${ARGN})
  if(NOT DEFINED ARG_LAYER)
    message(FATAL_ERROR "moat_component(${name}): LAYER is required")
  endif()
  foreach(dep IN LISTS ARG_DEPENDS)
    get_property(dep_layer GLOBAL PROPERTY MOAT_LAYER_${dep})
    if("${dep_layer}" STREQUAL "")
      message(FATAL_ERROR
        "layering: component '${name}' depends on '${dep}', which is not defined yet "
        "(a dependency must be on a lower layer and added before its users)")
    endif()
    if((name MATCHES "^device" AND dep MATCHES "^service") OR
       (name MATCHES "^service" AND dep MATCHES "^device"))
      message(FATAL_ERROR
        "layering: '${name}' may not depend on '${dep}': device and service code meet only "
        "in formats and crypto")
    endif()
    if(NOT dep_layer LESS ARG_LAYER)
      message(FATAL_ERROR
        "layering: component '${name}' (layer ${ARG_LAYER}) may not depend on '${dep}' "
        "(layer ${dep_layer}); only lower layers may be used")
    endif()
  endforeach()
  add_library(moat_${name} STATIC ${ARG_SOURCES})
  target_include_directories(moat_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  set(dep_targets "")
  foreach(dep IN LISTS ARG_DEPENDS)
    list(APPEND dep_targets moat_${dep})
  endforeach()
  target_link_libraries(moat_${name} PUBLIC ${dep_targets} ${ARG_LIBS})
  moat_warnings(moat_${name})
  set_property(GLOBAL PROPERTY MOAT_LAYER_${name} ${ARG_LAYER})
  set_property(GLOBAL PROPERTY MOAT_DEPS_${name} ${ARG_DEPENDS})
  set_property(GLOBAL PROPERTY MOAT_DIR_${name} ${CMAKE_CURRENT_SOURCE_DIR})
  set_property(GLOBAL APPEND PROPERTY MOAT_COMPONENT_LIST ${name})
endfunction()

# Our code builds with -Wall -Wextra -Werror; third-party headers come in as SYSTEM.
function(moat_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wno-missing-field-initializers)
endfunction()

# Scans every component's sources for #include "<component>/..." and fails the configure
# step if a file includes a component its own component does not (transitively) depend on.
function(moat_check_include_layering)
  get_property(components GLOBAL PROPERTY MOAT_COMPONENT_LIST)
  foreach(name IN LISTS components)
    # Transitive closure of declared dependencies.
    set(allowed ${name})
    set(frontier ${name})
    while(frontier)
      list(POP_FRONT frontier current)
      get_property(deps GLOBAL PROPERTY MOAT_DEPS_${current})
      foreach(d IN LISTS deps)
        if(NOT d IN_LIST allowed)
          list(APPEND allowed ${d})
          list(APPEND frontier ${d})
        endif()
      endforeach()
    endwhile()
    get_property(dir GLOBAL PROPERTY MOAT_DIR_${name})
    file(GLOB_RECURSE files ${dir}/*.h ${dir}/*.cc)
    foreach(f IN LISTS files)
      if(f MATCHES "_test\\.cc$")
        continue()  # tests may include test helpers of lower layers; they are linked separately
      endif()
      file(STRINGS ${f} includes REGEX "^#include \"[a-z_]+/")
      foreach(line IN LISTS includes)
        # "device/sandbox/x.h" belongs to component device_sandbox; "core/x.h" to core.
        string(REGEX REPLACE "^#include \"([a-z_]+)/.*" "\\1" inc ${line})
        if(line MATCHES "^#include \"([a-z_]+)/([a-z_]+)/")
          set(two "${CMAKE_MATCH_1}_${CMAKE_MATCH_2}")
          if(two IN_LIST components)
            set(inc ${two})
          endif()
        endif()
        if(inc IN_LIST components AND NOT inc IN_LIST allowed)
          file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${f})
          message(FATAL_ERROR
            "layering: ${rel} (component '${name}') includes \"${inc}/...\", "
            "but '${name}' does not depend on '${inc}'")
        endif()
      endforeach()
    endforeach()
  endforeach()
endfunction()

# moat_test(NAME SOURCES ... DEPENDS comp... [LIBS ...] [NEEDS_PKI] [SUPPORT]) — a GoogleTest
# binary run by ctest. NEEDS_PKI makes its tests wait for the test PKI fixture
# (tests/pki/make-test-pki.sh), whose files are then under ${MOAT_BINARY_DIR}/test-pki.
# SUPPORT links the shared test helpers in tests/support ("support/shell.h", "support/pki.h").
function(moat_test name)
  cmake_parse_arguments(ARG "NEEDS_PKI;SUPPORT" "" "SOURCES;DEPENDS;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  set(dep_targets "")
  foreach(dep IN LISTS ARG_DEPENDS)
    list(APPEND dep_targets moat_${dep})
  endforeach()
  if(ARG_SUPPORT)
    list(APPEND dep_targets moat_test_support)
  endif()
  target_link_libraries(${name} PRIVATE ${dep_targets} ${ARG_LIBS} GTest::gtest GTest::gmock
                                        GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    MOAT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    MOAT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  moat_warnings(${name})
  # One GoogleTest case never needs minutes: a hung case fails after 3 minutes instead of holding
  # a CI slot for ctest's default (the Makefile's --timeout 600).
  set(props LABELS "unit;${ARG_LABELS}" TIMEOUT 180)
  if(ARG_NEEDS_PKI)
    list(APPEND props FIXTURES_REQUIRED test_pki)
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES ${props})
endfunction()

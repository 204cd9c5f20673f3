# Compiles every public header as a translation unit of its own, so each one
# includes what it uses and works whatever a user includes before it (a
# header that expanded Highway's per-target code after hwy/highway.h did
# not). Run by ctest as public_headers_stand_alone:
#   cmake -DCXX=... -DDEFINES=A=1|B ... -DINCLUDE_DIR=... -DWORK_DIR=... -P this
file(GLOB_RECURSE headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/qkern/*.h)
set(flag_list -std=c++17)
string(REPLACE "|" ";" defines "${DEFINES}")
foreach(define ${defines})
  list(APPEND flag_list -D${define})
endforeach()
file(MAKE_DIRECTORY ${WORK_DIR})
set(failed "")
set(checked 0)
foreach(header ${headers})
  # -inl.h files are per-target bodies, detail/ their expansion list: both
  # are included only through dispatch.h.
  if(header MATCHES "-inl\\.h$" OR header MATCHES "/detail/")
    continue()
  endif()
  string(MAKE_C_IDENTIFIER ${header} stem)
  set(source ${WORK_DIR}/${stem}.cc)
  file(WRITE ${source} "#include \"${header}\"\n")
  execute_process(
    COMMAND ${CXX} ${flag_list} -I${INCLUDE_DIR} -fsyntax-only ${source}
    RESULT_VARIABLE rc ERROR_VARIABLE errors)
  math(EXPR checked "${checked} + 1")
  if(NOT rc EQUAL 0)
    string(SUBSTRING "${errors}" 0 2000 head)
    message("${header} does not compile on its own:\n${head}")
    list(APPEND failed ${header})
  endif()
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "no public headers found under ${INCLUDE_DIR}")
endif()
if(failed)
  message(FATAL_ERROR "headers that do not compile alone: ${failed}")
endif()
message("${checked} public headers compile on their own")

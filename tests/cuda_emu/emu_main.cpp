// emu_main <op> <in_dir> <out_dir> [schedule]: reads in_dir/*.npy and
// in_dir/params.txt ("name value" lines), runs the op's kernels under the
// emulator, writes out_dir/<output>.npy. Exit status: 0 done, 2 usage or
// input error, 3 synchronisation error, 4 race hazards found (outputs are
// written anyway); memcheck findings abort through ASan/UBSan.
#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "driver.h"
#include "emu.h"

namespace emu {

std::map<std::string, OpFn>& ops() {
  static std::map<std::string, OpFn> table;
  return table;
}

namespace {

[[noreturn]] void input_error(const std::string& msg) {
  std::fprintf(stderr, "emu: %s\n", msg.c_str());
  std::exit(2);
}

std::size_t itemsize(const std::string& dtype) {
  if (dtype == "<f4") return 4;
  if (dtype == "<f8" || dtype == "<i8") return 8;
  if (dtype == "|u1") return 1;
  if (dtype == "<f2" || dtype == "<u2") return 2;  // float16; bfloat16 as its raw bits
  input_error("unsupported dtype " + dtype);
}

Array allocate(const std::string& dtype, std::vector<int64_t> shape) {
  Array a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.bytes = std::size_t(a.numel()) * itemsize(dtype);
  a.data = static_cast<unsigned char*>(std::malloc(a.bytes > 0 ? a.bytes : 1));
  return a;
}

// numpy format 1.0/2.0, C order, little-endian numeric dtypes only.
Array read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) input_error("cannot read " + path);
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) input_error(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t n;
    f.read(reinterpret_cast<char*>(&n), 2);
    header_len = n;
  } else {
    f.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  f.read(&header[0], header_len);
  auto field = [&](const char* key) {
    const auto at = header.find(key);
    if (at == std::string::npos) input_error(path + ": no " + key);
    return header.substr(at + std::strlen(key));
  };
  const std::string descr = field("'descr': '").substr(0, 3);
  if (field("'fortran_order': ").rfind("False", 0) != 0) input_error(path + " is Fortran-ordered");
  std::string dims = field("'shape': (");
  dims = dims.substr(0, dims.find(')'));
  std::vector<int64_t> shape;
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  Array a = allocate(descr, shape);
  f.read(reinterpret_cast<char*>(a.data), std::streamsize(a.bytes));
  if (std::size_t(f.gcount()) != a.bytes) input_error(path + " is truncated");
  return a;
}

void write_npy(const std::string& path, const Array& a) {
  std::string shape = "(";
  for (int64_t d : a.shape) shape += std::to_string(d) + ", ";
  if (a.shape.size() > 1) shape.erase(shape.size() - 1);
  if (a.shape.size() > 1) shape.erase(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '" + a.dtype + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t n = uint16_t(header.size());
  f.write(reinterpret_cast<const char*>(&n), 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(a.data), std::streamsize(a.bytes));
  if (!f) input_error("cannot write " + path);
}

}  // namespace

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const Array& Io::input(const std::string& name) const {
  const auto it = in.find(name);
  if (it == in.end()) input_error("missing input " + name + ".npy");
  return it->second;
}

meanspot::gpu::DeviceLimits Io::device() const {
  return {params.count("sms") ? int(num("sms")) : 1, params.count("max_blocks") ? int64_t(num("max_blocks")) : 2};
}

double Io::num(const std::string& name) const { return std::stod(str(name)); }

std::string Io::str(const std::string& name) const {
  const auto it = params.find(name);
  if (it == params.end()) input_error("missing parameter " + name);
  return it->second;
}

Array& Io::output(const std::string& name, const std::string& dtype, std::vector<int64_t> shape) {
  Array& a = out[name] = allocate(dtype, std::move(shape));
  std::memset(a.data, 0xff, a.bytes);
  track_global(a.data, a.bytes);
  return a;
}

Array& Io::scratch(const std::string& name, std::size_t bytes) {
  Array& a = scratches[name] = allocate("|u1", {int64_t(bytes)});
  std::memset(a.data, 0xff, a.bytes);
  track_global(a.data, a.bytes);
  return a;
}

}  // namespace emu

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s <op> <in_dir> <out_dir> [forward|reverse|random:<seed>]\n", argv[0]);
    return 2;
  }
  const auto op = emu::ops().find(argv[1]);
  if (op == emu::ops().end()) {
    std::fprintf(stderr, "emu: unknown op %s\n", argv[1]);
    return 2;
  }
  emu::set_schedule(argc > 4 ? argv[4] : "forward");
  const std::string in_dir = argv[2], out_dir = argv[3];
  emu::Io io;
  DIR* d = opendir(in_dir.c_str());
  if (d == nullptr) emu::input_error("cannot open " + in_dir);
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) {
      emu::Array& a = io.in[name.substr(0, name.size() - 4)] = emu::read_npy(in_dir + "/" + name);
      emu::track_global(a.data, a.bytes);
    }
  }
  closedir(d);
  std::ifstream params(in_dir + "/params.txt");
  std::string key, value;
  while (params >> key >> value) io.params[key] = value;
  op->second(io);
  for (const auto& [name, a] : io.out) emu::write_npy(out_dir + "/" + name + ".npy", a);
  emu::untrack_all_globals();
  for (auto* m : {&io.in, &io.out, &io.scratches})
    for (auto& [name, a] : *m) std::free(a.data);
  if (emu::hazards() > 0) {
    std::fprintf(stderr, "emu: %ld race hazard(s)\n", emu::hazards());
    return 4;
  }
  return 0;
}

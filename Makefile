# Convenience entry points; the build itself is CMake (CMakeLists.txt).
.PHONY: all deps build test run fuzz format clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j$$(nproc)

test:
	bash scripts/test.sh

run: build
	bash scripts/run.sh build

fuzz:
	bash scripts/fuzz.sh $${SECONDS_PER_TARGET:-60}

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz

// SPDX-License-Identifier: Apache-2.0
/*
 * A fake libnvidia-ml for tests: exports the NVML functions vigil calls
 * (through nvml-wrapper) with NVML's real signatures, structure layouts and
 * error codes, and answers from a text file a test writes.
 *
 * The file is named by VIGIL_FAKE_NVML_CONFIG and re-read whenever it
 * changes, so a test can start processes, then say NVML sees them. Lines:
 *
 *   # comment
 *   init CODE                        nvmlInit_v2 returns CODE (default 0)
 *   driver VERSION                   nvmlSystemGetDriverVersion
 *   cuda VERSION                     nvmlSystemGetCudaDriverVersion_v2 (e.g. 12040)
 *   gpu UUID SERIAL PCI_BUS_ID MEMORY_TOTAL MEMORY_USED MIG(0|1) NAME...
 *   mig GPU_INDEX UUID MEMORY_TOTAL  a MIG device of that GPU
 *   proc GPU_INDEX compute|graphics PID USED_BYTES
 *   util GPU_INDEX PID SM_PERCENT MEM_PERCENT
 *   fail FUNCTION GPU_INDEX|-1 CODE  FUNCTION returns CODE (for that GPU, or any)
 *   grow GPU_INDEX N TIMES           the next TIMES process-list copies find N more
 *                                    processes than the count said (INSUFFICIENT_SIZE)
 *
 * Codes are NVML's (nvml.h): 3 NOT_SUPPORTED, 7 INSUFFICIENT_SIZE,
 * 9 DRIVER_NOT_LOADED, 15 GPU_IS_LOST, 999 UNKNOWN...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_UNKNOWN 999

#define MAX_GPUS 16
#define MAX_MIGS 8
#define MAX_PROCS 1024
#define MAX_FAILS 32

typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

typedef struct {
	unsigned int version;
	unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
	unsigned int pid;
	unsigned long long timeStamp;
	unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

struct fake_device {
	int index;     /* GPU index, or the parent's for a MIG device */
	int mig_index; /* -1 for a GPU */
	char uuid[96], serial[64], pci[32], name[96];
	unsigned long long mem_total, mem_used;
	unsigned int mig_mode;
};
typedef struct fake_device *nvmlDevice_t;

struct fake_proc {
	int gpu, graphics;
	unsigned int pid;
	unsigned long long used;
};

struct fake_util {
	int gpu;
	unsigned int pid, sm, mem;
};

struct fake_fail {
	char function[64];
	int gpu;
	nvmlReturn_t code;
};

static struct {
	int loaded, initialised;
	struct timespec mtime;
	off_t size;
	nvmlReturn_t init_code;
	char driver[80];
	int cuda;
	int gpu_count;
	struct fake_device gpus[MAX_GPUS];
	int mig_count[MAX_GPUS];
	struct fake_device migs[MAX_GPUS][MAX_MIGS];
	int proc_count;
	struct fake_proc procs[MAX_PROCS];
	int util_count;
	struct fake_util utils[MAX_PROCS];
	int fail_count;
	struct fake_fail fails[MAX_FAILS];
	unsigned int grow_by[MAX_GPUS];
	int grow_times[MAX_GPUS];
} S;

static void load(void)
{
	const char *path = getenv("VIGIL_FAKE_NVML_CONFIG");
	struct stat st;
	if (!path || stat(path, &st) != 0) {
		if (!S.loaded)
			strcpy(S.driver, "0.0");
		S.loaded = 1;
		return;
	}
	if (S.loaded && st.st_mtim.tv_sec == S.mtime.tv_sec && st.st_mtim.tv_nsec == S.mtime.tv_nsec &&
	    st.st_size == S.size)
		return;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	int initialised = S.initialised;
	memset(&S, 0, sizeof(S));
	S.initialised = initialised;
	S.loaded = 1;
	S.mtime = st.st_mtim;
	S.size = st.st_size;
	strcpy(S.driver, "550.54.15");
	S.cuda = 12040;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		int gpu, code;
		unsigned int pid, sm, mem;
		unsigned long long a, b;
		char kind[16], fn[64];
		struct fake_device *d;
		if (line[0] == '#' || line[0] == 0)
			continue;
		if (sscanf(line, "init %d", &code) == 1) {
			S.init_code = code;
		} else if (sscanf(line, "driver %79s", S.driver) == 1) {
		} else if (sscanf(line, "cuda %d", &S.cuda) == 1) {
		} else if (!strncmp(line, "gpu ", 4) && S.gpu_count < MAX_GPUS) {
			d = &S.gpus[S.gpu_count];
			int used = 0;
			if (sscanf(line, "gpu %95s %63s %31s %llu %llu %u %n", d->uuid, d->serial, d->pci,
				   &d->mem_total, &d->mem_used, &d->mig_mode, &used) >= 6 && used > 0) {
				snprintf(d->name, sizeof(d->name), "%s", line + used);
				d->index = S.gpu_count;
				d->mig_index = -1;
				S.gpu_count++;
			}
		} else if (sscanf(line, "mig %d", &gpu) == 1 && gpu >= 0 && gpu < MAX_GPUS &&
			   S.mig_count[gpu] < MAX_MIGS) {
			d = &S.migs[gpu][S.mig_count[gpu]];
			if (sscanf(line, "mig %d %95s %llu", &gpu, d->uuid, &d->mem_total) == 3) {
				d->index = gpu;
				d->mig_index = S.mig_count[gpu]++;
			}
		} else if (sscanf(line, "proc %d %15s %u %llu", &gpu, kind, &pid, &a) == 4 &&
			   S.proc_count < MAX_PROCS) {
			S.procs[S.proc_count++] = (struct fake_proc){gpu, !strcmp(kind, "graphics"), pid, a};
		} else if (sscanf(line, "util %d %u %u %u", &gpu, &pid, &sm, &mem) == 4 &&
			   S.util_count < MAX_PROCS) {
			S.utils[S.util_count++] = (struct fake_util){gpu, pid, sm, mem};
		} else if (sscanf(line, "grow %d %u %d", &gpu, &pid, &code) == 3 && gpu >= 0 && gpu < MAX_GPUS) {
			S.grow_by[gpu] = pid;
			S.grow_times[gpu] = code;
		} else if (sscanf(line, "fail %63s %d %d", fn, &gpu, &code) == 3 && S.fail_count < MAX_FAILS) {
			struct fake_fail *x = &S.fails[S.fail_count++];
			snprintf(x->function, sizeof(x->function), "%s", fn);
			x->gpu = gpu;
			x->code = code;
		}
		(void)b;
	}
	fclose(f);
}

/* The configured failure of `function` for this device, or NVML_SUCCESS. */
static nvmlReturn_t failure(const char *function, nvmlDevice_t d)
{
	for (int i = 0; i < S.fail_count; i++)
		if (!strcmp(S.fails[i].function, function) &&
		    (S.fails[i].gpu < 0 || (d && S.fails[i].gpu == d->index)))
			return S.fails[i].code;
	return NVML_SUCCESS;
}

#define ENTER(fn, dev)                                                                             \
	do {                                                                                       \
		load();                                                                            \
		if (!S.initialised)                                                                \
			return NVML_ERROR_UNINITIALIZED;                                           \
		nvmlReturn_t fail_ = failure(fn, dev);                                             \
		if (fail_ != NVML_SUCCESS)                                                         \
			return fail_;                                                              \
	} while (0)

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *s)
{
	if (!out)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (strlen(s) + 1 > length)
		return NVML_ERROR_INSUFFICIENT_SIZE;
	strcpy(out, s);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void)
{
	load();
	if (S.init_code != NVML_SUCCESS)
		return S.init_code;
	S.initialised = 1;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void)
{
	if (!S.initialised)
		return NVML_ERROR_UNINITIALIZED;
	S.initialised = 0;
	return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
	switch (result) {
	case 0: return "Success";
	case 1: return "Uninitialized";
	case 2: return "Invalid Argument";
	case 3: return "Not Supported";
	case 7: return "Insufficient Size";
	case 9: return "Driver Not Loaded";
	case 15: return "GPU is lost";
	default: return "Unknown Error";
	}
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
	ENTER("nvmlSystemGetDriverVersion", NULL);
	return copy_string(version, length, S.driver);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version)
{
	ENTER("nvmlSystemGetCudaDriverVersion_v2", NULL);
	*version = S.cuda;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
	ENTER("nvmlDeviceGetCount_v2", NULL);
	*count = S.gpu_count;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
	ENTER("nvmlDeviceGetHandleByIndex_v2", NULL);
	if (index >= (unsigned int)S.gpu_count)
		return NVML_ERROR_INVALID_ARGUMENT;
	*device = &S.gpus[index];
	return failure("nvmlDeviceGetHandleByIndex_v2", *device);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index)
{
	ENTER("nvmlDeviceGetIndex", d);
	*index = d->index;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length)
{
	ENTER("nvmlDeviceGetName", d);
	return copy_string(name, length, d->mig_index < 0 ? d->name : "MIG device");
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length)
{
	ENTER("nvmlDeviceGetUUID", d);
	return copy_string(uuid, length, d->uuid);
}

nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length)
{
	ENTER("nvmlDeviceGetSerial", d);
	return copy_string(serial, length, d->serial);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	ENTER("nvmlDeviceGetPciInfo_v3", d);
	memset(pci, 0, sizeof(*pci));
	unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
	sscanf(d->pci, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
	pci->domain = domain;
	pci->bus = bus;
	pci->device = dev;
	pci->pciDeviceId = 0x233010de;
	pci->pciSubSystemId = 0x16c110de;
	snprintf(pci->busId, sizeof(pci->busId), "%s", d->pci);
	snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%.15s", d->pci);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
	ENTER("nvmlDeviceGetMemoryInfo_v2", d);
	if ((m->version >> 24) != 2)
		return NVML_ERROR_INVALID_ARGUMENT;
	m->total = d->mem_total;
	m->used = d->mem_used;
	m->reserved = 0;
	m->free = d->mem_total > d->mem_used ? d->mem_total - d->mem_used : 0;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending)
{
	ENTER("nvmlDeviceGetMigMode", d);
	*current = d->mig_mode;
	*pending = d->mig_mode;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count)
{
	ENTER("nvmlDeviceGetMaxMigDeviceCount", d);
	*count = d->mig_index < 0 ? S.mig_count[d->index] : 0;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig)
{
	ENTER("nvmlDeviceGetMigDeviceHandleByIndex", d);
	if (d->mig_index >= 0 || index >= (unsigned int)S.mig_count[d->index])
		return NVML_ERROR_NOT_FOUND;
	*mig = &S.migs[d->index][index];
	return NVML_SUCCESS;
}

static nvmlReturn_t running(nvmlDevice_t d, int graphics, unsigned int *count, nvmlProcessInfo_t *out)
{
	unsigned int n = 0;
	for (int i = 0; i < S.proc_count; i++)
		if (S.procs[i].gpu == d->index && S.procs[i].graphics == graphics)
			n++;
	if (!out || *count < n) {
		*count = n;
		return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
	}
	/* Processes that started between the caller's count and this copy. */
	if (S.grow_times[d->index] > 0 && *count < n + S.grow_by[d->index]) {
		S.grow_times[d->index]--;
		*count = n + S.grow_by[d->index];
		return NVML_ERROR_INSUFFICIENT_SIZE;
	}
	unsigned int k = 0;
	for (int i = 0; i < S.proc_count; i++)
		if (S.procs[i].gpu == d->index && S.procs[i].graphics == graphics)
			out[k++] = (nvmlProcessInfo_t){S.procs[i].pid, S.procs[i].used, 0xFFFFFFFF, 0xFFFFFFFF};
	*count = k;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
						     nvmlProcessInfo_t *infos)
{
	ENTER("nvmlDeviceGetComputeRunningProcesses_v3", d);
	return running(d, 0, count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
						      nvmlProcessInfo_t *infos)
{
	ENTER("nvmlDeviceGetGraphicsRunningProcesses_v3", d);
	return running(d, 1, count, infos);
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *out,
					     unsigned int *count, unsigned long long lastSeen)
{
	ENTER("nvmlDeviceGetProcessUtilization", d);
	unsigned int n = 0;
	for (int i = 0; i < S.util_count; i++)
		if (S.utils[i].gpu == d->index)
			n++;
	if (!out || *count < n) {
		*count = n;
		return n == 0 ? NVML_ERROR_NOT_FOUND : NVML_ERROR_INSUFFICIENT_SIZE;
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	unsigned long long ts = (unsigned long long)now.tv_sec * 1000000ULL + now.tv_nsec / 1000;
	unsigned int k = 0;
	for (int i = 0; i < S.util_count; i++)
		if (S.utils[i].gpu == d->index)
			out[k++] = (nvmlProcessUtilizationSample_t){S.utils[i].pid, ts, S.utils[i].sm,
								   S.utils[i].mem, 0, 0};
	*count = k;
	(void)lastSeen;
	return NVML_SUCCESS;
}
